"""Fuzz the model-file reader and the volume header handling with Hypothesis.

Targets:

* ``model``: a valid model file (the tiny test model, trained here in seconds unless ``--model``
  is given) mutated by bit flips, truncations, byte insertions, edits of the safetensors header
  (tensor dtypes, shapes, offsets) and random JSON values put anywhere in the DeepOrganSeg
  metadata; fed to ``model.read_metadata`` and ``model.load_model``.
* ``volume``: NRRD, MHA and NIfTI files whose header fields (sizes, spacings, directions, pixel
  types, encodings, NIfTI dims/pixdim/datatype/scaling/qform/sform) take hostile values, with
  too little, enough or too much data; fed to ``volume.read_volume`` and
  ``validation.check_volume``.

The only acceptable failure is a ``DeepOrganSegError`` (a clean refusal). Each input runs under
a per-input time limit (``signal.alarm``; over it counts as a hang) in a worker process; workers
run in batches, so that a segfault or an abort is seen as a crash (the input is kept for
reproduction) instead of taking the fuzzer down. Workers cap their address space.

Usage::

    python benchmarks/fuzz.py --seconds 120            # per target
    python benchmarks/fuzz.py --targets volume --seconds 30 --batch-seconds 10
    python benchmarks/fuzz.py --quick                  # 1 s per target, one batch each
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from _common import add_quick_flag, print_header, print_row, tiny_model

TARGETS = ("model", "volume")


class _Hang(Exception):
    """An input ran over its time limit."""


# ---------------------------------------------------------------------------------------------
# Strategies.


@functools.lru_cache(maxsize=None)
def _strategies():
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.text(max_size=12)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([0, -1, 1, 255, 256, 1025, 10**9, 1e-300, 1e300, "", "CT", "MR",
                           "ct", "mr", "DSN3D", []]),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=8)
    sizes = st.sampled_from([0, 1, 2, 3, 7, 16, 33, -1, 10**6, 2**31, 2**40])
    floats = st.sampled_from([1.0, 0.5, 2.5, 0.0, -1.0, 1e-12, 1e12, float("nan"),
                              float("inf"), 20.0, 0.1]) | st.floats(-1e3, 1e3)
    return st, json_values, sizes, floats


def _paths(document, prefix=()):
    """Every (path) into a JSON document, for picking where to mutate."""
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


def _replace(document, path, value):
    if not path:
        return value
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def _split(data: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8: 8 + length]), data[8 + length:]


def _join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def mutate_model(draw, valid: bytes) -> bytes:
    """One hostile model file drawn from ``valid``."""
    st, json_values, _, _ = _strategies()
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "metadata", "tensor"]))
    data = bytearray(valid)
    (header_length,) = struct.unpack("<Q", valid[:8])
    if kind == "flip":
        in_header = draw(st.booleans())
        limit = 8 + header_length if in_header else len(data)
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, limit - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "insert":
        position = draw(st.integers(0, 8 + header_length))
        return bytes(data[:position]) + draw(st.binary(min_size=1, max_size=16)) + bytes(
            data[position:])
    header, body = _split(valid)
    if kind == "metadata":
        document = json.loads(header["__metadata__"]["deeporganseg"])
        for _ in range(draw(st.integers(1, 3))):
            paths = list(_paths(document))
            path = paths[draw(st.integers(0, len(paths) - 1))]
            document = _replace(document, path, draw(json_values))
        header["__metadata__"]["deeporganseg"] = json.dumps(document)
        return _join(header, body)
    names = [name for name in header if name != "__metadata__"]
    name = names[draw(st.integers(0, len(names) - 1))]
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    header[name][field] = draw(st.sampled_from(
        ["F16", "F64", "I64", "BOOL", "U8", "C64", "F8_E4M3", "nonsense"]) if field == "dtype"
        else st.lists(st.integers(-2, 2**62), max_size=5))
    return _join(header, body)


_NRRD_TYPES = ["short", "ushort", "uchar", "signed char", "int", "uint", "float", "double",
               "longlong", "ulonglong", "block", "complex", "bogus"]
_MHA_TYPES = ["MET_SHORT", "MET_USHORT", "MET_UCHAR", "MET_CHAR", "MET_INT", "MET_FLOAT",
              "MET_DOUBLE", "MET_LONG_LONG", "MET_STRING", "MET_BOGUS"]


def make_volume(draw, folder: Path) -> Path:
    """One image file with hostile header values."""
    st, _, sizes, floats = _strategies()
    kind = draw(st.sampled_from(["nrrd", "mha", "nifti"]))
    dimension = draw(st.sampled_from([3, 3, 3, 2, 4, 1, 0, 7]))
    size = [draw(sizes) for _ in range(max(dimension, 0))]
    payload = draw(st.sampled_from(["none", "short", "exact", "long"]))
    voxels = 1
    for n in size:
        voxels *= max(n, 0)
    exact = min(voxels * 8, 1 << 20)
    length = {"none": 0, "short": exact // 3, "exact": exact, "long": exact + 64}[payload]
    data = draw(st.binary(min_size=min(length, 64), max_size=64)) * (length // 64 + 1)
    data = data[:length]
    if kind == "nrrd":
        vectors = " ".join("(" + ",".join(str(draw(floats)) for _ in range(3)) + ")"
                           for _ in range(3))
        fields = {"type": draw(st.sampled_from(_NRRD_TYPES)), "dimension": str(dimension),
                  "sizes": " ".join(map(str, size)),
                  "encoding": draw(st.sampled_from(["raw", "gzip", "ascii", "hex", "bz2",
                                                    "bogus"])),
                  "endian": draw(st.sampled_from(["little", "big"]))}
        if draw(st.booleans()):
            fields["space"] = draw(st.sampled_from(["left-posterior-superior", "RAS", "3D-x"]))
            fields["space directions"] = vectors
        else:
            fields["spacings"] = " ".join(str(draw(floats)) for _ in range(max(dimension, 0)))
        text = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in fields.items()) + "\n"
        path = folder / "fuzz.nrrd"
        path.write_bytes(text.encode() + data)
        return path
    if kind == "mha":
        matrix = " ".join(str(draw(floats)) for _ in range(9))
        fields = {"ObjectType": "Image", "NDims": str(dimension),
                  "BinaryData": draw(st.sampled_from(["True", "False"])),
                  "BinaryDataByteOrderMSB": draw(st.sampled_from(["False", "True"])),
                  "CompressedData": draw(st.sampled_from(["False", "True"])),
                  "TransformMatrix": matrix,
                  "ElementSpacing": " ".join(str(draw(floats)) for _ in range(max(dimension, 0))),
                  "DimSize": " ".join(map(str, size)),
                  "ElementNumberOfChannels": str(draw(st.sampled_from([1, 1, 3, 0, -1]))),
                  "ElementType": draw(st.sampled_from(_MHA_TYPES)),
                  "ElementDataFile": "LOCAL"}
        path = folder / "fuzz.mha"
        path.write_bytes("".join(f"{k} = {v}\n" for k, v in fields.items()).encode() + data)
        return path
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    dims = [dimension, *size[:7]] + [1] * (7 - min(len(size), 7))
    struct.pack_into("<8h", header, 40, *[max(-32768, min(32767, d)) for d in dims])
    struct.pack_into("<h", header, 70, draw(st.sampled_from([2, 4, 8, 16, 64, 256, 512, 768,
                                                             1024, 1280, 32, 128, 0, 999])))
    struct.pack_into("<8f", header, 76, *[min(max(draw(floats), -3e38), 3e38) for _ in range(8)])
    struct.pack_into("<f", header, 108, draw(st.sampled_from([352.0, 0.0, -4.0, 1e9, 348.0])))
    struct.pack_into("<2f", header, 112, draw(floats) if draw(st.booleans()) else 0.0,
                     min(max(draw(floats), -3e38), 3e38))
    struct.pack_into("<2h", header, 252, draw(st.integers(0, 4)), draw(st.integers(0, 4)))
    struct.pack_into("<6f", header, 256, *[min(max(draw(floats), -3e38), 3e38)
                                           for _ in range(6)])
    struct.pack_into("<12f", header, 280, *[min(max(draw(floats), -3e38), 3e38)
                                            for _ in range(12)])
    header[344:348] = b"n+1\0"
    path = folder / "fuzz.nii"
    path.write_bytes(bytes(header) + b"\0" * 4 + data)
    return path


# ---------------------------------------------------------------------------------------------
# Worker: one batch in this process.


def _valid_model(model: str | None, folder: Path) -> Path:
    return Path(model) if model else tiny_model(folder)


def run_worker(target: str, seconds: float, seed: int, timeout_s: int, model: str | None,
               keep: Path) -> dict:
    """Fuzz ``target`` for ``seconds``; counts by outcome and the first few unexpected errors."""
    from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings
    from hypothesis import strategies as st

    from DeepOrganSegLib.model import load_model, read_metadata
    from DeepOrganSegLib.errors import DeepOrganSegError
    from DeepOrganSegLib.validation import check_volume
    from DeepOrganSegLib.volume_io import read_volume

    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    valid = _valid_model(model, folder).read_bytes() if target == "model" else b""
    counts = {"tried": 0, "accepted": 0, "refused": 0, "errors": 0, "hangs": 0}
    examples: list[str] = []
    stop = time.monotonic() + seconds

    def on_alarm(signum, frame):
        raise _Hang()

    signal.signal(signal.SIGALRM, on_alarm)

    def prepare(draw) -> Path:
        """Draw one input and write it (outside the checks: Hypothesis' own control flow
        passes through ``draw`` and must not be caught)."""
        if target == "model":
            path = folder / "fuzz.safetensors"
            path.write_bytes(mutate_model(draw, valid))
        else:
            path = make_volume(draw, folder)
        keep.write_bytes(path.read_bytes())
        return path

    def exercise(path: Path) -> None:
        if target == "model":
            read_metadata(path)
            load_model(path)
        else:
            check_volume(read_volume(path))

    def one_input(data) -> None:
        path = prepare(data.draw)
        counts["tried"] += 1
        signal.alarm(timeout_s)
        try:
            exercise(path)
            counts["accepted"] += 1
        except DeepOrganSegError as error:
            counts["refused"] += 1
            if "\n" in str(error):
                counts["errors"] += 1
                examples.append(f"multi-line message: {error!r}")
        except _Hang:
            counts["hangs"] += 1
            examples.append(f"hang over {timeout_s} s")
        except Exception as error:  # noqa: BLE001 - what the fuzzer is looking for
            counts["errors"] += 1
            if len(examples) < 5:
                examples.append("".join(traceback.format_exception_only(error)).strip())
        finally:
            signal.alarm(0)

    run = 0
    while time.monotonic() < stop:  # short Hypothesis runs (own seeds) until the time is over
        run += 1
        hypothesis_seed(seed * 100_003 + run)(settings(
            max_examples=20, deadline=None, database=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck))(given(st.data())(one_input)))()
    return {**counts, "examples": examples}


# ---------------------------------------------------------------------------------------------
# Driver: batches in subprocesses, a table at the end.


def run_target(target: str, seconds: float, batch_seconds: float, timeout_s: int,
               model: str | None, crash_folder: Path, memory_gb: float) -> dict:
    totals = {"tried": 0, "accepted": 0, "refused": 0, "errors": 0, "hangs": 0, "crashes": 0}
    examples: list[str] = []
    started = time.monotonic()
    batch = 0
    while time.monotonic() - started < seconds:
        batch += 1
        keep = crash_folder / f"{target}-batch{batch}.input"
        budget = min(batch_seconds, seconds - (time.monotonic() - started))
        command = [sys.executable, __file__, "--worker", target, "--seconds", f"{budget:.1f}",
                   "--seed", str(batch), "--timeout", str(timeout_s), "--keep", str(keep),
                   "--memory-gb", str(memory_gb)] + (["--model", model] if model else [])
        try:  # a hang inside native code never returns to the per-input alarm
            result = subprocess.run(command, capture_output=True, text=True,
                                    timeout=budget + 2 * timeout_s + 120)
        except subprocess.TimeoutExpired:
            totals["hangs"] += 1
            examples.append(f"batch {batch}: worker hung; input kept in {keep}")
            continue
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            totals["crashes"] += 1
            examples.append(f"batch {batch}: worker exited {result.returncode}; input kept in "
                            f"{keep}: {result.stderr.strip().splitlines()[-1:]}")
            continue
        report = json.loads(lines[-1])
        for key in ("tried", "accepted", "refused", "errors", "hangs"):
            totals[key] += report[key]
        examples += report["examples"]
        keep.unlink(missing_ok=True)
    return {**totals, "seconds": round(time.monotonic() - started, 1), "examples": examples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--seconds", type=float, default=120, help="fuzzing time per target")
    parser.add_argument("--batch-seconds", type=float, default=60,
                        help="time per worker process")
    parser.add_argument("--timeout", type=int, default=20, help="per-input limit (s): a hang")
    parser.add_argument("--model", help="valid model file to mutate (default: train a tiny one)")
    parser.add_argument("--memory-gb", type=float, default=6.0,
                        help="address-space cap of a worker")
    parser.add_argument("--crash-folder", default=tempfile.gettempdir(),
                        help="where inputs of crashed batches are kept")
    parser.add_argument("--worker", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--keep", help=argparse.SUPPRESS)
    add_quick_flag(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = args.batch_seconds = 1.0

    if args.worker:
        limit = int(args.memory_gb * 1024**3)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        report = run_worker(args.worker, args.seconds, args.seed, args.timeout, args.model,
                            Path(args.keep))
        print(json.dumps(report), flush=True)
        return 0

    model = args.model
    if "model" in args.targets and not model:  # train once, share with every batch
        model = str(_valid_model(None, Path(tempfile.mkdtemp(prefix="fuzz-model-"))))
    rows = [(target, run_target(target, args.seconds, args.batch_seconds, args.timeout, model,
                                Path(args.crash_folder), args.memory_gb))
            for target in args.targets]
    print_header("target", "inputs", "seconds", "accepted", "refused", "errors", "crashes",
                 "hangs")
    for target, row in rows:
        print_row(target, row["tried"], row["seconds"], row["accepted"], row["refused"],
                  row["errors"], row["crashes"], row["hangs"])
    for target, row in rows:
        for example in row["examples"]:
            print(f"{target}: {example}")
    failed = any(row["errors"] or row["crashes"] or row["hangs"] for _, row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
