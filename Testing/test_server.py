"""``deeporganseg serve`` and its client on localhost, with the tiny model: a remote run is the
local run, the server refuses what it must before reading it, and neither a client nor a
server that goes away midway leaves anything behind. (The job board's own rules, without
HTTP: test_server_jobs.py.)"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ellipsoid_scene
from served import PATIENCE_S, Served
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.errors import Cancelled, InputError
from DeepOrganSegLib.progress import CancelToken
from DeepOrganSegLib.remote.client import Server, ServerError, run_remote
from DeepOrganSegLib.volume_io import read_probabilities, read_volume, write_volume

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

TOKEN = "s3cret-token-for-tests"
#: The upload limit of the test server: the scenes are a few hundred kB, the largest 10 MB.
MAX_UPLOAD_MB = 20
def _until(condition, what: str) -> None:
    """Wait (polling) until ``condition()`` holds; fail after :data:`PATIENCE_S`."""
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, f"waited in vain for {what}"
        time.sleep(0.02)


def _request(url: str, method: str, path: str, body: bytes | None = None,
             token: str | None = TOKEN) -> tuple[int, dict[str, str], dict]:
    """One raw request: (status, headers, JSON body)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=PATIENCE_S)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), json.loads(data) if data else {}


def _put_start(served: Served, job: str, length: int) -> socket.socket:
    """A connection that has sent the headers of the upload of ``job``'s input, saying it is
    ``length`` bytes long, and none of its body."""
    parts = urlsplit(served.url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=PATIENCE_S)
    connection.sendall(f"PUT /v1/jobs/{job}/inputs/input HTTP/1.1\r\nHost: x\r\nAuthorization: "
                       f"Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n".encode())
    return connection


def _job_request(size: int, command: str = "segment") -> bytes:
    inputs = {"input": {"suffix": ".nrrd", "bytes": size}}
    return json.dumps({"command": command, "options": [], "inputs": inputs,
                       "outputs": {"output": ".nrrd"}}).encode()


def _jobs(served: Served) -> dict[str, int]:
    return _request(served.url, "GET", "/v1/info")[2]["jobs"]


def _idle(served: Served) -> bool:
    jobs = _jobs(served)
    return jobs["uploading"] == jobs["queued"] == jobs["running"] == 0 and not served.job_folders()


@pytest.fixture(scope="module")
def token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def served(tiny_model_path, token_file, tmp_path_factory):
    """A server with a token, one worker, at most 4 jobs and 5 MB per job; after the module,
    SIGTERM must stop it cleanly and leave no file of any job."""
    server = Served(tiny_model_path, tmp_path_factory.mktemp("served"), "--token-file",
                    str(token_file), "--workers", "1", "--max-jobs", "4", "--max-upload-mb",
                    str(MAX_UPLOAD_MB))
    yield server
    assert server.stop() == 0
    assert not list(server.jobs_folder.iterdir()), "the server left files behind"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, np.ndarray]:
    image, truth = ellipsoid_scene(seed=23)
    return write_volume(image, tmp_path_factory.mktemp("scene") / "ct.nii.gz"), truth.array


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_a_remote_run_equals_the_local_run_voxel_for_voxel(served, scene, token_file,
                                                           tiny_model_path, tmp_path, capsys):
    source, _ = scene
    here, there = tmp_path / "here", tmp_path / "there"
    for folder, flags in ((here, ["--model", str(tiny_model_path)]),
                          (there, ["--server", served.url, "--token-file", str(token_file)])):
        folder.mkdir()
        assert main(["segment", str(source), str(folder / "labels.seg.nrrd"), "--probabilities",
                     str(folder / "p.nrrd"), "--stats", str(folder / "stats.json"),
                     "--progress", "none", *flags]) == 0
    local_table, remote_table = _tables(capsys.readouterr().out)
    assert remote_table == local_table  # the organ table, below its timing line
    local, remote = read_volume(here / "labels.seg.nrrd"), read_volume(there / "labels.seg.nrrd")
    assert np.array_equal(remote.array, local.array) and np.unique(local.array).tolist() == [0, 1, 2]
    assert (remote.spacing, remote.origin) == (local.spacing, local.origin)
    assert np.array_equal(remote.direction, local.direction)
    assert sitk.ReadImage(str(there / "labels.seg.nrrd")).GetMetaData("Segment0_Name") == \
        sitk.ReadImage(str(here / "labels.seg.nrrd")).GetMetaData("Segment0_Name")
    assert np.allclose(read_probabilities(there / "p.nrrd")[0],
                       read_probabilities(here / "p.nrrd")[0], atol=1e-6)
    statistics = [json.loads((folder / "stats.json").read_text())["labels"] for folder in (here, there)]
    assert [(organ["name"], organ["voxels"]) for organ in statistics[1]] == \
        [(organ["name"], organ["voxels"]) for organ in statistics[0]]
    _until(lambda: _idle(served), "the job's folder to go")


def _tables(printed: str) -> tuple[list[str], list[str]]:
    """The organ rows of the two tables ``segment`` printed, one after the other."""
    lines = printed.strip().splitlines()
    starts = [number for number, line in enumerate(lines) if line.startswith("organ")]
    assert len(starts) == 2, printed
    return lines[starts[0]:starts[1] - 1], lines[starts[1]:]


def test_refine_on_the_server_equals_refine_here(served, scene, token_file, tiny_model_path,
                                                 tmp_path):
    source, truth = scene
    segmentation, probabilities = tmp_path / "labels.nrrd", tmp_path / "p.nrrd"
    assert main(["segment", str(source), str(segmentation), "--probabilities", str(probabilities),
                 "--model", str(tiny_model_path), "--progress", "none"]) == 0
    image = read_volume(source)
    strokes = np.where((truth == 2) & (np.arange(truth.shape[0]) % 4 == 0)[:, None, None], 2, 0)
    scribbles = write_volume(image.with_array(strokes.astype(np.uint8)), tmp_path / "strokes.nrrd")
    common = [str(source), str(segmentation), str(scribbles)]
    assert main(["refine", *common, str(tmp_path / "here.nrrd"), "--probabilities",
                 str(probabilities), "--model", str(tiny_model_path)]) == 0
    assert main(["refine", *common, str(tmp_path / "there.nrrd"), "--probabilities",
                 str(probabilities), "--server", served.url, "--token-file", str(token_file)]) == 0
    assert np.array_equal(_array(tmp_path / "there.nrrd"), _array(tmp_path / "here.nrrd"))
    _until(lambda: _idle(served), "the job's folder to go")


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x"])
def test_a_missing_or_wrong_token_is_refused_and_nothing_runs(served, token):
    status, headers, body = _request(served.url, "POST", "/v1/jobs", _job_request(100), token)
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    assert body["exit_code"] == 2 and "token" in body["error"] and "\n" not in body["error"]
    assert _request(served.url, "GET", "/v1/info", token=token)[0] == 401
    assert _idle(served)


def test_the_client_says_so_in_one_line_for_a_wrong_token(served, scene, tmp_path, capsys):
    wrong = tmp_path / "token"
    wrong.write_text("not-the-token")
    output = tmp_path / "labels.nii.gz"
    code = main(["segment", str(scene[0]), str(output), "--server", served.url, "--token-file",
                 str(wrong), "--progress", "none"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("error: missing or wrong token") and "\n" not in error
    assert not output.exists() and _idle(served)


@pytest.mark.parametrize("flags, reason", [
    (["--host", "0.0.0.0"], "needs --token-file"),
    (["--certfile", __file__], "give --certfile and --keyfile together"),
    (["--certfile", __file__, "--keyfile", __file__], "cannot load them as a certificate"),
])
def test_what_the_operator_must_fix_is_said_before_the_model_loads(tiny_model_path, capsys,
                                                                   flags, reason):
    code = main(["serve", "--port", "0", "--model", str(tiny_model_path), *flags])
    error = capsys.readouterr().err.strip()
    assert code == 2 and reason in error and error.count("\n") == 0


def test_an_upload_over_the_limit_is_refused_before_it_is_read(served, token_file, tmp_path,
                                                               capsys):
    # declared in the job request: refused before any volume is sent
    big = tmp_path / "big.nii"
    big.write_bytes(b"\0" * (MAX_UPLOAD_MB * 1_000_000 + 1))
    code = main(["segment", str(big), str(tmp_path / "labels.nii.gz"), "--server", served.url,
                 "--token-file", str(token_file), "--progress", "none"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and f"takes at most {MAX_UPLOAD_MB:.1f} MB per job" in error
    # a body larger than its job said: 413 on the headers alone, none of the body sent
    status, _, job = _request(served.url, "POST", "/v1/jobs", _job_request(1000))
    assert status == 201
    with _put_start(served, job["job"], 50_000_000) as connection:
        answer = http.client.HTTPResponse(connection)
        answer.begin()
        assert answer.status == 413 and json.loads(answer.read())["exit_code"] == 2
    assert _request(served.url, "DELETE", f"/v1/jobs/{job['job']}")[0] == 200
    assert _idle(served)


def test_a_client_killed_mid_upload_leaves_no_job_and_the_server_serving(served, scene,
                                                                         token_file, tmp_path):
    status, _, job = _request(served.url, "POST", "/v1/jobs", _job_request(1_000_000))
    assert status == 201
    connection = _put_start(served, job["job"], 1_000_000)
    connection.sendall(b"\0" * 400_000)
    _until(lambda: any((job / "input.nrrd").exists() for job in served.job_folders()),
           "the upload to begin")
    connection.close()  # the client dies half-way
    _until(lambda: _idle(served), "the half-sent job to be dropped")
    assert main(["segment", str(scene[0]), str(tmp_path / "labels.nii.gz"), "--server",
                 served.url, "--token-file", str(token_file), "--progress", "none"]) == 0


def test_cancel_stops_the_job_on_the_server_and_writes_nothing(served, tmp_path):
    image, _ = ellipsoid_scene(seed=5, shape=(120, 160, 160), spacing=(0.8, 0.8, 1.0))
    source = write_volume(image, tmp_path / "big.nrrd")  # seconds of work, not a tenth
    cancel = CancelToken()

    def progress(stage: str, fraction: float, message: str = "") -> None:
        if stage in ("preprocess", "inference"):  # the server's job is running
            cancel.cancel()

    output = tmp_path / "labels.nii.gz"
    with pytest.raises(Cancelled, match="cancelled by the user"):
        run_remote(Server(served.url, TOKEN), "segment", {"input": source},
                   {"output": output}, progress=progress, cancel=cancel)
    assert [path.name for path in tmp_path.iterdir()] == ["big.nrrd"]
    _until(lambda: _idle(served), "the cancelled job to go")


def test_a_flood_is_told_when_to_come_back(served):
    jobs = []
    while (answer := _request(served.url, "POST", "/v1/jobs", _job_request(100)))[0] == 201:
        jobs.append(answer[2]["job"])
        assert len(jobs) <= 4
    status, headers, body = answer
    assert len(jobs) == 4 and status == 503 and int(headers["retry-after"]) >= 1
    assert body == {"error": "the server is busy; try again later", "exit_code": 1}
    for job in jobs[1:]:
        assert _request(served.url, "DELETE", f"/v1/jobs/{job}")[0] == 200
    status, _, again = _request(served.url, "POST", "/v1/jobs", _job_request(100))
    assert status == 201  # room again
    for job in (jobs[0], again["job"]):
        assert _request(served.url, "DELETE", f"/v1/jobs/{job}")[0] == 200
    assert _idle(served)


@pytest.mark.parametrize("problem", ["malformed volume", "task of no model", "organ of no task"])
def test_what_a_local_run_refuses_the_server_refuses_with_the_same_line(
        served, token_file, tiny_model_path, scene, tmp_path, capsys, problem):
    source = scene[0]
    flags: list[str] = []
    if problem == "malformed volume":
        source = tmp_path / "scan.nii.gz"
        source.write_bytes(os.urandom(4096))
    elif problem == "task of no model":
        flags = ["--task", "heart-mr"]
    else:
        flags = ["--organs", "liver", "pancreas"]
    errors = []
    for where in (["--model", str(tiny_model_path)],
                  ["--server", served.url, "--token-file", str(token_file)]):
        output = tmp_path / "labels.nii.gz"
        assert main(["segment", str(source), str(output), *flags, *where,
                     "--progress", "none"]) == 2
        errors.append(capsys.readouterr().err.strip())
        assert not output.exists()
    assert errors[0] == errors[1] and errors[0].startswith("error: ") and "\n" not in errors[0]
    assert _request(served.url, "GET", "/v1/info")[0] == 200


@pytest.mark.parametrize("method, path, body, status", [
    ("GET", "/v1/nothing", None, 404),
    ("PATCH", "/v1/jobs", None, 405),
    ("POST", "/v1/jobs", b"{not json", 400),
    ("POST", "/v1/jobs", json.dumps({"command": "segment", "options": ["--model", "/etc/passwd"],
                                     "inputs": {"input": {"suffix": ".nrrd", "bytes": 1}},
                                     "outputs": {"output": ".nrrd"}}).encode(), 400),
    ("POST", "/v1/jobs", json.dumps({"command": "segment", "options": [],
                                     "inputs": {"input": {"suffix": ".mhd", "bytes": 1}},
                                     "outputs": {"output": ".nrrd"}}).encode(), 400),
    ("GET", "/v1/jobs/no-such-job", None, 404),
])
def test_every_bad_request_is_answered_with_a_one_line_json_reason(served, method, path, body,
                                                                   status):
    answer, _, document = _request(served.url, method, path, body)
    assert answer == status
    assert set(document) == {"error", "exit_code"} and "\n" not in document["error"]
    assert "Traceback" not in document["error"]


def test_a_volume_whose_header_points_at_a_server_file_is_refused(served, token_file, tmp_path,
                                                                  capsys):
    detached = tmp_path / "scan.nrrd"
    detached.write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\n"
                        "encoding: raw\ndata file: /etc/hostname\n\n")
    code = main(["segment", str(detached), str(tmp_path / "labels.nii.gz"), "--server",
                 served.url, "--token-file", str(token_file), "--progress", "none"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error == f"error: {detached}: its header names a separate data file; " \
                                  f"send a NRRD that holds its voxels (save it as one .nrrd file)"
    _until(lambda: _idle(served), "the refused job to go")


def test_a_server_killed_mid_job_leaves_one_line_and_no_output(tiny_model_path, scene, tmp_path):
    server = Served(tiny_model_path, tmp_path / "server")
    output = tmp_path / "labels.nii.gz"

    def progress(stage: str, fraction: float, message: str = "") -> None:
        if stage == "preprocess" and server.process.poll() is None:  # the job is running
            server.process.kill()
            server.process.wait()

    with pytest.raises(ServerError) as failure:
        run_remote(Server(server.url), "segment", {"input": scene[0]}, {"output": output},
                   progress=progress)
    assert str(failure.value).startswith(f"lost the server at {server.url} (")
    assert "\n" not in str(failure.value) and failure.value.exit_code == 1
    assert not output.exists() and not [p for p in tmp_path.iterdir() if p.name != "server"]


def test_tls_with_the_operators_certificate(tiny_model_path, scene, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(certificate)], check=True,
                   capture_output=True)
    server = Served(tiny_model_path, tmp_path / "server", "--certfile", str(certificate),
                    "--keyfile", str(key))
    try:
        assert server.url.startswith("https://")
        output = tmp_path / "labels.nii.gz"
        run_remote(Server(server.url, ca_file=str(certificate)), "segment",
                   {"input": scene[0]}, {"output": output})
        assert np.unique(_array(output)).tolist() == [0, 1, 2]
        with pytest.raises(InputError, match="cannot reach .*CERTIFICATE_VERIFY_FAILED"):
            run_remote(Server(server.url), "segment", {"input": scene[0]}, {"output": output})
    finally:
        assert server.stop() == 0
