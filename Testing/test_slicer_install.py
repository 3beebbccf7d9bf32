"""First use on a clean Slicer: which engine packages are missing, and installing them in child
processes that the GUI only polls (``DeepOrganSegLib.mrml.install``; no MRML, no torch needed).

The install steps here are stand-in ``python -c`` children (and a stand-in light-the-torch):
what is checked is the job's sequencing, environment, failure reporting, waiting and cancel,
not pip itself.
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import pytest

from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.mrml.install import (LIGHT_THE_TORCH, InstallJob,
                                          InstallStep, install_steps, missing_requirements,
                                          read_requirements)
from DeepOrganSegLib.mrml.runner import RunState

REQUIREMENTS = Path(__file__).resolve().parents[1] / "DeepOrganSeg" / "Resources" / "requirements.txt"


def python_step(code: str, description: str = "a step") -> InstallStep:
    return InstallStep(description, (sys.executable, "-c", code), "do it by hand")


def no_torch(name: str) -> str:
    """``installed`` of a Slicer without PyTorch."""
    raise PackageNotFoundError(name)


def test_the_modules_requirements_file_reads_as_requirement_lines_without_comments():
    lines = read_requirements(REQUIREMENTS)
    assert lines and all(not line.startswith("#") and line == line.strip() for line in lines)
    names = {line.split(">")[0].split("=")[0].split("<")[0] for line in lines}
    assert {"safetensors", "scipy", "tqdm"} <= names
    assert not names & {"numpy", "SimpleITK", "pip", "torch"}  # Slicer's own, or installed apart


def test_missing_requirements_are_the_absent_and_the_out_of_range_packages_in_order():
    versions = {"torch": "2.1.0", "scipy": "1.13.1", "tqdm": "4.66.0"}

    def installed(name: str) -> str:
        if name not in versions:
            raise PackageNotFoundError(name)
        return versions[name]

    missing = missing_requirements(["torch>=2.2", "safetensors>=0.4,<1", "scipy>=1.10,<2",
                                    "tqdm>=4.60,<5"], installed)
    assert missing == ["torch>=2.2", "safetensors<1,>=0.4"]
    assert missing_requirements(["scipy>=1.10,<2"], installed) == []


def test_pytorch_is_installed_first_through_light_the_torch_then_the_rest_in_one_pip_call():
    """Issue 32, defect 3: light-the-torch pins pip (0.8.1: ``pip<26.1``; Slicer 5.12 ships
    26.1.1), so it goes with its pip into a private folder and runs from there: nothing but
    PyTorch and the listed packages is installed into Slicer's Python."""
    python = "/opt/Slicer/bin/PythonSlicer"
    steps = install_steps(python, ["torch>=2.2", "safetensors>=0.4,<1", "tqdm>=4.60,<5"],
                          "/tmp/installer", installed=no_torch)
    assert [(step.command, step.python_path) for step in steps] == [
        ((python, "-m", "pip", "install", "--target", "/tmp/installer", LIGHT_THE_TORCH), ()),
        ((python, "-m", "light_the_torch", "install", "torch>=2.2"), ("/tmp/installer",)),
        ((python, "-m", "pip", "install", "safetensors>=0.4,<1", "tqdm>=4.60,<5"), ())]
    assert [step.command[2] for step in install_steps("python", ["tqdm>=4.60,<5"], "/tmp/x")] \
        == ["pip"]
    assert install_steps("python", [], "/tmp/x") == []


def test_light_the_torch_runs_from_its_private_folder(tmp_path):
    """The PyTorch step finds light-the-torch (and the pip it brought) in the private folder,
    not in Slicer's Python: a stand-in ``light_the_torch`` put there, as ``pip install
    --target`` puts the real one, is what runs, with the requirement as its arguments."""
    folder, seen = tmp_path / "installer", tmp_path / "seen.txt"
    (folder / "light_the_torch").mkdir(parents=True)
    (folder / "light_the_torch" / "__main__.py").write_text(
        f"import sys; open({str(seen)!r}, 'w').write(__file__ + '|' + ' '.join(sys.argv[1:]))")
    (_, torch_step) = install_steps(sys.executable, ["torch>=2.2"], folder, installed=no_torch)
    job = InstallJob([torch_step], scratch=[folder])
    job.start()
    assert job.wait(timeout=60) is RunState.DONE, job.failure
    ran, arguments = seen.read_text().split("|")
    assert Path(ran).parent.parent == folder and arguments == "install torch>=2.2"
    assert not folder.exists()  # the private folder is removed when the install ends


def test_a_pytorch_already_installed_is_never_replaced():
    """A PyTorch installed by the PyTorch Utils module (or by hand) is the user's choice of
    build: one too old is refused in one line that says where to update it."""
    with pytest.raises(InputError, match="PyTorch 2.1.0 is installed .* PyTorch Utils") as error:
        install_steps("python", ["torch>=2.2"], "/tmp/x", installed=lambda name: "2.1.0")
    assert "\n" not in str(error.value)


def test_an_install_waits_while_another_pip_run_of_slicers_is_under_way(tmp_path):
    """Slicer 5.12's install-in-progress flag: two pip runs at once can corrupt the
    environment, so no step starts while it is set; the status line says why."""
    marker = tmp_path / "ran.txt"
    other_install = {"running": True}
    job = InstallJob([python_step(f"open({str(marker)!r}, 'w')")],
                     busy=lambda: other_install["running"])
    job.start()
    for _poll in range(5):
        assert job.poll() is RunState.RUNNING
        time.sleep(0.05)
    assert not marker.exists() and "waiting for another" in job.message
    other_install["running"] = False
    assert job.wait(timeout=60) is RunState.DONE and marker.exists()


def test_an_install_cancelled_while_waiting_ends_at_once():
    job = InstallJob([python_step("pass")], busy=lambda: True)
    job.start()
    job.cancel()
    assert job.poll() is RunState.CANCELLED


def test_an_install_runs_its_steps_one_after_the_other_and_polling_never_blocks(tmp_path):
    marker = tmp_path / "order.txt"
    job = InstallJob([
        python_step(f"import time; time.sleep(0.5); open({str(marker)!r}, 'a').write('1')"),
        python_step(f"open({str(marker)!r}, 'a').write('2')")])
    assert job.state is RunState.IDLE and job.fraction == 0.0
    job.start()
    slowest_poll = 0.0
    while not job.state.finished:
        started = time.perf_counter()
        job.poll()
        slowest_poll = max(slowest_poll, time.perf_counter() - started)
        time.sleep(0.02)
    assert job.state is RunState.DONE, job.failure
    assert marker.read_text() == "12"
    assert job.fraction == 1.0 and job.failure is None
    assert slowest_poll < 0.5  # a GUI timer's poll, not a wait on the child


def test_a_failing_step_ends_the_install_with_pips_error_line_and_what_to_do(tmp_path):
    marker = tmp_path / "never.txt"
    job = InstallJob([
        python_step("import sys; print('Collecting tqdm'); print('ERROR: No matching "
                    "distribution found for tqdm>=99', file=sys.stderr); sys.exit(1)",
                    "installing tqdm>=99"),
        python_step(f"open({str(marker)!r}, 'w')")])
    job.start()
    assert job.wait(timeout=60) is RunState.FAILED
    assert job.failure.startswith("installing tqdm>=99 failed (ERROR: No matching distribution "
                                  "found for tqdm>=99)")
    assert job.failure.endswith("do it by hand") and "\n" not in job.failure
    assert "No matching distribution" in job.details
    assert not marker.exists()  # the next step never ran


def test_a_cancelled_install_stops_its_child_at_once_and_installs_nothing_further(tmp_path):
    marker = tmp_path / "never.txt"
    job = InstallJob([python_step("import time; time.sleep(60)"),
                      python_step(f"open({str(marker)!r}, 'w')")])
    job.start()
    time.sleep(0.3)
    started = time.perf_counter()
    job.cancel()
    assert time.perf_counter() - started < 0.5  # cancel only signals; the GUI thread goes on
    assert job.state is RunState.CANCEL_REQUESTED and not job.state.finished
    assert job.wait(timeout=15) is RunState.CANCELLED
    assert time.perf_counter() - started < 10
    assert not marker.exists() and job.failure is None


def test_a_step_that_cannot_start_fails_the_install_in_one_line(tmp_path):
    job = InstallJob([InstallStep("installing tqdm", (str(tmp_path / "no-python"), "-m", "pip"),
                                  "reinstall 3D Slicer")])
    job.start()
    assert job.state is RunState.FAILED
    assert job.failure.startswith("installing tqdm could not start") and "\n" not in job.failure


def test_an_install_whose_steps_succeed_but_leave_a_package_missing_fails_saying_so():
    """light-the-torch exits 0 when no index it asks has the package (checked offline, the
    PyTorch index out of reach): the job checks what is still missing before it says DONE."""
    job = InstallJob([python_step("pass", "installing PyTorch")],
                     still_missing=lambda: ["torch>=2.2"])
    job.start()
    assert job.wait(timeout=60) is RunState.FAILED
    assert job.failure.startswith("the install ended but torch>=2.2 is still missing")
    assert "PyTorch Utils" in job.failure and "\n" not in job.failure
