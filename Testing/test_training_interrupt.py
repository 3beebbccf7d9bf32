"""Ctrl-C ends a training script with one ``error:`` line and exit code 3, also while the script
is still importing torch (a second or two after it starts), never with a traceback; a script
started with Ctrl-C ignored keeps it ignored."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from DeepOrganSegLib.errors import EXIT_CANCELLED
from training.entry import interrupt_quietly_while_starting, run_script

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(path.name for path in (ROOT / "training").glob("*.py")
                 if "run_script(" in path.read_text() and path.name != "entry.py")

#: Runs a training script as ``python training/NAME.py --help`` does and sends the process
#: Ctrl-C at its first import of a third-party or engine module after ``training.entry`` (whose
#: own light import is the one moment left unguarded): deterministically inside the imports,
#: where a real Ctrl-C lands while torch loads.
_INTERRUPTED_WHILE_IMPORTING = """
import builtins, os, runpy, signal, sys
real_import = builtins.__import__
def interrupting_import(name, *args, **kwargs):
    if name.split(".")[0] in ("numpy", "SimpleITK", "torch", "yaml", "DeepOrganSegLib") \\
            and name != "DeepOrganSegLib.errors":
        builtins.__import__ = real_import
        os.kill(os.getpid(), signal.SIGINT)
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupting_import
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def restore_sigint():
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


@pytest.mark.parametrize("script", SCRIPTS)
def test_ctrl_c_while_a_script_imports_prints_one_line_and_exits_3(script):
    result = subprocess.run([sys.executable, "-c", _INTERRUPTED_WHILE_IMPORTING,
                             str(ROOT / "training" / script)],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr, result.stdout) == (
        EXIT_CANCELLED, "error: cancelled by the user\n", "")


def test_every_training_script_is_covered():
    assert {"train.py", "evaluate.py", "export.py", "tune_crf.py"} <= set(SCRIPTS)


def test_the_script_itself_gets_ctrl_c_back_as_keyboard_interrupt(restore_sigint, capsys):
    interrupt_quietly_while_starting()

    def main() -> int:
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        raise KeyboardInterrupt

    assert run_script(main) == EXIT_CANCELLED
    assert capsys.readouterr().err == "error: cancelled by the user\n"


def test_an_ignored_ctrl_c_stays_ignored(restore_sigint):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    interrupt_quietly_while_starting()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
