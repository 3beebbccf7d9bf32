"""Every line the engine and the training scripts print from a message that may quote a file's
name or bytes is one line with its control characters escaped (issue 35): a newline, an ANSI
escape or a carriage return from a hostile file never reaches the terminal as itself."""

from __future__ import annotations

import pytest

from DeepOrganSegLib.cli.reporters import with_warnings
from DeepOrganSegLib.errors import InputError
from training.entry import run_script

HOSTILE = "NRRD\x1b[31mDub\r\n<script>alert(1)</script>\n\x1b[2J"


def _one_escaped_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1 and "\x1b" not in text and "\r" not in text, repr(text)
    assert "\\x1b[31m" in lines[0] and "\\n" in lines[0]
    return lines[0]


@pytest.mark.parametrize("error", [InputError(f"cannot read the image: {HOSTILE}"),
                                   FileNotFoundError(2, HOSTILE, f"/data/{HOSTILE}.nrrd")],
                         ids=["engine error", "file error"])
def test_a_training_scripts_error_quoting_hostile_bytes_is_one_escaped_line(error, capsys):
    def main() -> int:
        raise error

    assert run_script(main) == 2
    assert _one_escaped_line(capsys.readouterr().err).startswith("error: ")


def test_a_warning_quoting_hostile_bytes_is_one_escaped_line(capsys):
    with_warnings(lambda stage, fraction, message="": None)("warning", 0.5, HOSTILE)
    assert _one_escaped_line(capsys.readouterr().err).startswith("warning: ")
