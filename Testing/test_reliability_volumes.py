"""Hostile input volumes: every one is refused by the CLI with one line, exit code 2, no
traceback and no output; every pixel type and rescaled storage segments; doubtful modalities
warn. The same refusals reach the Slicer Logic as a failed run that leaves the scene as it was.

Each case is its own test (ids name the case); ``docs/reliability.md`` lists them all.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import SimpleITK as sitk

from helpers import ellipsoid_scene
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.metrics import dice
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import read_volume, write_volume

# ---------------------------------------------------------------------------------------------
# Makers of bad inputs: each writes into ``folder`` and returns the path to give the CLI.


def _nrrd(path: Path, fields: dict[str, str], data: bytes) -> Path:
    """A hand-written attached-header NRRD (raw encoding unless ``fields`` says otherwise)."""
    header = "NRRD0004\n" + "".join(f"{key}: {value}\n" for key, value in
                                    {"encoding": "raw", "endian": "little", **fields}.items())
    path.write_bytes(header.encode() + b"\n" + data)
    return path


def _cube(shape=(12, 16, 20), value: float | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    array = rng.normal(0, 100, size=shape).astype(np.float32) - 500
    return np.full(shape, value, np.float32) if value is not None else array


def _scene_file(folder: Path) -> Path:
    return write_volume(ellipsoid_scene(seed=41)[0], folder / "ct.nrrd")


def _truncated(source: Callable[[Path], Path], keep: float) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = source(folder)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path
    return make


def _write(name: str, volume: Volume, compress: bool = True) -> Callable[[Path], Path]:
    return lambda folder: write_volume(volume, folder / name, compress=compress)


def _sitk_write(name: str, image: sitk.Image) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        sitk.WriteImage(image, str(folder / name))
        return folder / name
    return make


def _dicom_series(folder: Path, hu: np.ndarray, series_uid: str, spacing=(1.0, 1.0, 2.0),
                  slope: float = 1.0, intercept: float = -1024.0) -> None:
    """Write ``hu`` [k, j, i] as a CT DICOM series (int16 stored values, with the given rescale
    slope/intercept) with its own SeriesInstanceUID."""
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing(spacing)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(hu.shape[0]):
        tags = {"0020|000e": series_uid, "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
                "0008|0060": "CT", "0008|0018": f"{series_uid}.{k + 1}",
                "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
                "0028|1052": f"{intercept:g}", "0028|1053": f"{slope:g}",
                "0020|0013": str(k + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0032": f"0\\0\\{k * spacing[2]:g}"}
        slice_ = image[:, :, k]
        for tag, value in tags.items():
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}-{k:03d}.dcm"))
        writer.Execute(slice_)


def _two_series(folder: Path) -> Path:
    target = folder / "dicom"
    target.mkdir()
    for uid in ("1.2.826.0.1.3680043.2.1125.7", "1.2.826.0.1.3680043.2.1125.8"):
        _dicom_series(target, _cube((4, 8, 8)), uid)
    return target


def _folder_without_images(folder: Path) -> Path:
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("no images here")
    return folder / "notes"


def _empty_file(folder: Path) -> Path:
    (folder / "empty.nii.gz").write_bytes(b"")
    return folder / "empty.nii.gz"


def _text_as_nrrd(folder: Path) -> Path:
    (folder / "letter.nrrd").write_text("Dear colleague, please find the scan attached.\n")
    return folder / "letter.nrrd"


def _corrupt_nifti_header(folder: Path) -> Path:
    path = write_volume(Volume(_cube()), folder / "corrupt.nii", compress=False)
    data = bytearray(path.read_bytes())
    data[40:56] = b"\xff" * 16  # dim[] garbage: negative and huge sizes
    path.write_bytes(bytes(data))
    return path


def _corrupt_gzip(folder: Path) -> Path:
    path = write_volume(Volume(_cube()), folder / "corrupt.nii.gz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    return path


def _nifti_with(name: str, offset: int, values: np.ndarray) -> Callable[[Path], Path]:
    """A NIfTI file whose header bytes at ``offset`` are overwritten with ``values``: ``dim``
    at 40 (niftilib crashed on some), ``pixdim`` at 76 (ITK misreads some)."""
    def make(folder: Path) -> Path:
        path = write_volume(Volume(_cube()), folder / name, compress=False)
        data = bytearray(path.read_bytes())
        data[offset: offset + values.nbytes] = values.tobytes()
        path.write_bytes(bytes(data))
        return path
    return make


def _gzip_bomb(name: str, dims: tuple[int, int, int] | None = None) -> Callable[[Path], Path]:
    """A ``.nii.gz`` of 34 MB whose stream expands to 32 GiB, more than most machines' memory:
    a small NIfTI file (its header's ``dim`` set to ``dims`` if given) followed by zeros. The
    zeros are one compressed MiB repeated (after a full flush each block starts afresh), so the
    file takes milliseconds to make; its CRC is wrong, so a reader that expanded the whole
    stream would end with a CRC error, and only one that stopped early refuses it for its
    size."""
    def make(folder: Path) -> Path:
        nifti = write_volume(Volume(_cube()), folder / "small.nii", compress=False)
        head = bytearray(nifti.read_bytes())
        nifti.unlink()
        if dims is not None:
            head[40:48] = np.array((3, *dims), "<i2").tobytes()
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
        start = compressor.compress(bytes(head)) + compressor.flush(zlib.Z_FULL_FLUSH)
        zeros = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
        with open(folder / name, "wb") as stream:
            stream.write(start)
            stream.writelines(itertools.repeat(zeros, 32 * 1024))
            stream.write(compressor.flush())
        return folder / name
    return make


def _series_with_a_missing_slice(folder: Path) -> Path:
    """A DICOM series of 8 slices 2 mm apart whose fifth file is gone (a gap of 4 mm)."""
    target = folder / "series"
    target.mkdir()
    uid = "1.2.826.0.1.3680043.2.1125.21"
    _dicom_series(target, _cube((8, 16, 16)), uid)
    (target / f"{uid}-004.dcm").unlink()
    return target


def _raw(shape_kji: tuple[int, int, int], dtype=np.int16, value=0) -> bytes:
    return np.full(shape_kji, value, dtype).tobytes()


def _direction_nrrd(directions: str) -> Callable[[Path], Path]:
    return lambda folder: _nrrd(folder / "sheared.nrrd", {
        "type": "short", "dimension": "3", "space": "left-posterior-superior",
        "sizes": "8 8 8", "space directions": directions}, _raw((8, 8, 8), value=-500))


def _complex_nifti(folder: Path) -> Path:
    import nibabel

    data = (_cube() + 1j * _cube(seed=1)).astype(np.complex64).transpose(2, 1, 0)
    path = folder / "complex.nii.gz"
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), str(path))
    return path


#: (id, maker, expected fragment of the one-line message). All exit with code 2.
BAD_VOLUMES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing-path", lambda folder: folder / "nowhere.nii.gz", "no such file"),
    ("folder-without-images", _folder_without_images, "no DICOM series"),
    ("empty-folder", lambda folder: (folder / "empty").mkdir() or folder / "empty",
     "no DICOM series"),
    ("zero-byte-file", _empty_file, "file is empty"),
    ("text-file-named-nrrd", _text_as_nrrd, "cannot read image"),
    ("truncated-nii-gz", _truncated(_write("t.nii.gz", Volume(_cube())), 0.5),
     "compressed data is truncated or corrupt"),
    ("corrupt-gzip-stream", _corrupt_gzip, "compressed data is truncated or corrupt"),
    ("corrupt-nifti-header", _corrupt_nifti_header, "empty or invalid image size"),
    ("truncated-nii-data", _truncated(_write("t.nii", Volume(_cube()), compress=False), 0.7),
     "data is shorter than its header says"),
    ("nifti-zero-dimension", _nifti_with("dims.nii", 40, np.array((3, 16, 0, 16), "<i2")),
     "empty or invalid image size"),
    ("nifti-negative-spacing", _nifti_with("mirrored.nii", 80, np.array((-2.5, 2.5, -3), "<f4")),
     "voxel spacing -2.5 x 2.5 x -3 mm \\(pixdim\\), not positive"),
    ("nifti-zero-spacing", _nifti_with("flat.nii", 80, np.array((0, 2.5, 3), "<f4")),
     "voxel spacing 0 x 2.5 x 3 mm \\(pixdim\\), not positive"),
    ("gzip-bomb", _gzip_bomb("bomb.nii.gz"),
     "expands to more than 1064288 bytes, while its header describes 15712 bytes"),
    ("gzip-bomb-claiming-a-huge-image", _gzip_bomb("claims.nii.gz", (30000, 30000, 30000)),
     "image of 30000 x 30000 x 30000 voxels .* of memory to read"),
    ("truncated-nrrd-data", _truncated(_write("t.nrrd", Volume(_cube()), compress=False), 0.8),
     "cannot read image"),
    ("truncated-mha", _truncated(_write("t.mha", Volume(_cube()), compress=False), 0.6),
     "cannot read image"),
    ("corrupt-nrrd-header", lambda folder: _nrrd(folder / "bad.nrrd", {
        "type": "short", "dimension": "3", "sizes": "8 eight 8"}, _raw((8, 8, 8))),
     "cannot read image"),
    ("dicom-folder-with-two-series", _two_series, "2 DICOM series"),
    ("dicom-series-with-a-missing-slice", _series_with_a_missing_slice,
     "unevenly spaced: 4 mm between slices 4 and 5 of 7 \\(at 6 and 10 mm"),
    ("2d-image", _sitk_write("slice.nrrd", sitk.GetImageFromArray(_cube((1, 16, 16))[0])),
     "image is 2D"),
    ("4d-image", _sitk_write("cine.nrrd", sitk.JoinSeries(
        [sitk.GetImageFromArray(_cube((6, 8, 8), seed=t)) for t in range(3)])), "image is 4D"),
    ("vector-rgb-image", _sitk_write("rgb.nrrd", sitk.GetImageFromArray(
        np.zeros((6, 8, 8, 3), np.uint8), isVector=True)), "3 components"),
    ("complex-pixels", _complex_nifti, "not a real scalar|components|cannot read image"),
    ("one-voxel", _write("voxel.nrrd", Volume(np.array([[[-50.0]]], np.float32))), "single voxel"),
    ("one-slice", _write("slice3d.nrrd", Volume(_cube((1, 32, 32)))), "single slice along k"),
    ("extreme-anisotropy-0.1x0.1x20", _write("aniso.nrrd", Volume(
        _cube((6, 32, 32)), spacing=(0.1, 0.1, 20.0))), "too anisotropic \\(200:1"),
    ("non-orthogonal-direction", _direction_nrrd("(1,0,0) (0.5,0.866025,0) (0,0,1)"),
     "not orthonormal \\(image axes at 60.0 degrees"),
    ("singular-direction", _direction_nrrd("(1,0,0) (1,0,0) (0,0,1)"),
     "singular|determinant is 0"),
    ("zero-spacing", lambda folder: _nrrd(folder / "flat.nrrd", {
        "type": "short", "dimension": "3", "sizes": "8 8 8", "spacings": "1 0 1"},
        _raw((8, 8, 8), value=-500)), "not positive|singular|cannot read image"),
    ("nan-voxels", _write("nan.nrrd", Volume(np.where(_cube() > -520, _cube(), np.nan)
                                             .astype(np.float32))), "NaN or Inf voxels"),
    ("inf-voxels", _write("inf.nrrd", Volume(np.where(_cube() > -300, np.inf, _cube())
                                             .astype(np.float32))), "NaN or Inf voxels"),
    ("constant-image", _write("blank.nrrd", Volume(_cube(value=-1024.0))),
     "constant \\(every voxel is -1024\\)"),
    ("labelmap-given-as-input", lambda folder: write_volume(ellipsoid_scene(seed=2)[1],
                                                            folder / "labels.nrrd"),
     "looks like a labelmap \\(only the values 0, 1, 2\\)"),
    ("working-grid-over-budget", _write("huge-extent.nrrd", Volume(
        _cube((64, 64, 64)), spacing=(30.0, 30.0, 30.0))), "M allowed\\); crop it"),
    ("header-claims-more-than-memory", lambda folder: _nrrd(folder / "claims.nrrd", {
        "type": "short", "dimension": "3", "sizes": "100000 100000 100000"}, _raw((2, 2, 2))),
     "of memory to read"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad-volumes")


def _segment(tiny_model_path: Path, source: Path, output: Path, *extra: str) -> int:
    return main(["segment", str(source), str(output), "--model", str(tiny_model_path),
                 "--progress", "none", *extra])


def _assert_refused(capsys, code: int, output_folder: Path, pattern: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err
    assert re.search(pattern, err), err
    assert list(output_folder.iterdir()) == [], "an output (or temporary) file was left behind"
    return err


@pytest.mark.parametrize("case, make, pattern", BAD_VOLUMES, ids=[c[0] for c in BAD_VOLUMES])
def test_bad_volume_is_refused_with_one_line_and_exit_2(tiny_model_path, inputs, tmp_path, capsys,
                                                        case, make, pattern):
    folder = inputs / case
    folder.mkdir()
    source = make(folder)
    outputs = tmp_path / "out"
    outputs.mkdir()
    code = _segment(tiny_model_path, source, outputs / "labels.nii.gz", "--stats",
                    str(outputs / "stats.json"))
    _assert_refused(capsys, code, outputs, pattern)


def test_corrupt_files_never_crash_the_interpreter(inputs, tmp_path):
    """The readers run native code: read every corrupt file in a child process, which must end
    normally with an InputError for each (a segfault would be a non-zero exit)."""
    folder = tmp_path / "files"
    folder.mkdir()
    makers = {case: make for case, make, _ in BAD_VOLUMES
              if case.startswith(("truncated", "corrupt", "zero", "text", "header", "nifti"))}
    paths = [str(make(folder)) for make in makers.values()]
    script = textwrap.dedent("""
        import sys
        from DeepOrganSegLib.errors import InputError
        from DeepOrganSegLib.volume_io import read_volume
        for path in sys.argv[1:]:
            try:
                read_volume(path)
            except InputError as error:
                assert "\\n" not in str(error)
            else:
                raise SystemExit(f"{path} was read")
        print("all refused")
    """)
    result = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0 and "all refused" in result.stdout, result.stderr


def test_native_reader_diagnostics_do_not_reach_the_terminal(tiny_model_path, inputs, tmp_path):
    """niftilib prints its own complaints to file descriptor 2; the real process's stderr must
    still be the one ``error:`` line."""
    source = _corrupt_nifti_header(tmp_path)
    result = subprocess.run([sys.executable, "-m", "DeepOrganSegLib", "segment", str(source),
                             str(tmp_path / "labels.nii.gz"), "--model", str(tiny_model_path),
                             "--progress", "none"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr


# ---------------------------------------------------------------------------------------------
# Every pixel type segments; rescaled storage gives Hounsfield units.


def _stored_as(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``image`` (HU) stored in ``dtype``: signed types keep HU, unsigned ones HU + 1024, the
    8-bit ones one eighth of that (as a scanner export would squeeze them)."""
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    values = image.astype(np.float64)
    if info is not None:
        if info.min == 0:
            values = values + 1024
        if info.bits == 8:
            values = values / 8
        values = np.clip(np.round(values), info.min, info.max)
    return values.astype(dtype)


PIXEL_TYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
               "float32", "float64"]


@pytest.mark.parametrize("dtype", PIXEL_TYPES)
def test_every_pixel_type_segments(tiny_model_path, tmp_path, capsys, dtype):
    image, truth = ellipsoid_scene(seed=41)
    source = write_volume(image.with_array(_stored_as(image.array, np.dtype(dtype))),
                          tmp_path / f"ct-{dtype}.nrrd")
    output = tmp_path / "labels.nii.gz"
    assert _segment(tiny_model_path, source, output, "--task", "abdomen-ct") == 0, \
        capsys.readouterr().err
    labels = read_volume(output)
    assert labels.size == image.size
    if dtype in ("int16", "int32", "int64", "float32", "float64"):  # exact HU: full accuracy
        assert dice(labels.array, truth.array, 1) > 0.85


def test_nifti_scl_slope_and_inter_give_hounsfield_units(tiny_model_path, tmp_path):
    import nibabel

    image, truth = ellipsoid_scene(seed=41)
    stored = np.round((image.array + 1024) / 2).astype(np.int16)  # HU = 2 * stored - 1024
    # NIfTI stores RAS: negative x and y steps put the voxels where the LPS scene has them, so
    # that the patient (liver on the right) is the same one the reference labels describe
    sx, sy, sz = image.spacing
    nifti = nibabel.Nifti1Image(stored.transpose(2, 1, 0), np.diag([-sx, -sy, sz, 1.0]))
    nifti.header.set_slope_inter(2.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nibabel.save(nifti, str(path))
    loaded = read_volume(path)
    np.testing.assert_allclose(loaded.array, 2.0 * stored - 1024, atol=1e-3)
    output = tmp_path / "labels.nrrd"
    assert _segment(tiny_model_path, path, output) == 0
    assert dice(read_volume(output).array, truth.array, 1) > 0.85


def test_dicom_rescale_slope_and_intercept_give_hounsfield_units(tiny_model_path, tmp_path):
    image, truth = ellipsoid_scene(seed=41)
    hu = np.round(image.array / 2) * 2  # representable with slope 2
    folder = tmp_path / "series"
    folder.mkdir()
    _dicom_series(folder, hu, "1.2.826.0.1.3680043.2.1125.9", spacing=image.spacing,
                  slope=2.0, intercept=-1024.0)
    loaded = read_volume(folder)
    np.testing.assert_allclose(loaded.array, hu, atol=1e-3)
    output = tmp_path / "labels.nrrd"
    assert _segment(tiny_model_path, folder, output) == 0
    assert dice(read_volume(output).array, truth.array, 1) > 0.85


def test_dicom_folder_with_junk_files_reads_the_series_and_segments(tiny_model_path, tmp_path,
                                                                   capsys):
    """What a PACS export or a Mac leaves beside a series: the junk is not an image, so it is
    neither a second series nor an error."""
    image, truth = ellipsoid_scene(seed=41)
    folder = tmp_path / "series"
    folder.mkdir()
    _dicom_series(folder, image.array, "1.2.826.0.1.3680043.2.1125.22", spacing=image.spacing)
    (folder / "export-notes.txt").write_text("exported by PACS, 3 series\n")
    (folder / "DICOMDIR").write_bytes(bytes(128) + b"DICM" + np.random.default_rng(0).bytes(300))
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1" + bytes(2048))
    output = tmp_path / "labels.nii.gz"
    assert _segment(tiny_model_path, folder, output) == 0, capsys.readouterr().err
    assert capsys.readouterr().err == ""
    labels = read_volume(output)
    assert labels.size == image.size
    assert dice(labels.array, truth.array, 1) > 0.85


THIN_SLABS = [(2, 5.0), (2, 25.0), (3, 5.0), (3, 25.0), (8, 5.0)]


@pytest.mark.parametrize("slices, thickness_mm", THIN_SLABS,
                         ids=[f"thin-slab-{n}x{mm:g}mm" for n, mm in THIN_SLABS])
def test_thin_slab_segments_with_a_warning(tiny_model_path, tmp_path, capsys, slices,
                                           thickness_mm):
    """2-3 slices, or 8 of 5 mm (enough voxels, but only 40 mm): segmented, with a warning."""
    image = ellipsoid_scene(seed=41)[0]
    middle = image.array.shape[0] // 2
    slab = Volume(image.array[middle: middle + slices].copy(),
                  spacing=(*image.spacing[:2], thickness_mm), origin=image.origin)
    source = write_volume(slab, tmp_path / "slab.nrrd")
    output = tmp_path / "labels.nii.gz"
    assert _segment(tiny_model_path, source, output) == 0, capsys.readouterr().err
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: ") and "\n" not in err, err
    assert (f"thin slab (only {slices} x {thickness_mm:g} mm = {slices * thickness_mm:g} mm "
            f"along k)") in err, err
    assert read_volume(output).size == slab.size


@pytest.mark.parametrize("source_kind", ["nifti-file", "dicom-folder"])
def test_paths_with_spaces_and_non_ascii_characters_segment(tiny_model_path, tmp_path, capsys,
                                                            source_kind):
    """Input, model and every output under names with spaces, accents and CJK characters."""
    folder = tmp_path / "Patiënt Müller 東京 (2024)"
    folder.mkdir()
    image, truth = ellipsoid_scene(seed=41)
    if source_kind == "nifti-file":
        source = write_volume(image, folder / "CT thorax ü.nii.gz")
    else:
        source = folder / "série 1 é"
        source.mkdir()
        _dicom_series(source, image.array, "1.2.826.0.1.3680043.2.1125.23", spacing=image.spacing)
    model = folder / "modèle ñ.safetensors"
    model.write_bytes(tiny_model_path.read_bytes())
    output, stats = folder / "résultat ø.seg.nrrd", folder / "volumes ß.json"
    probabilities = folder / "probabilités 確率.nrrd"
    code = main(["segment", str(source), str(output), "--model", str(model), "--progress",
                 "none", "--stats", str(stats), "--probabilities", str(probabilities)])
    assert code == 0, capsys.readouterr().err
    assert dice(read_volume(output).array, truth.array, 1) > 0.85
    assert json.loads(stats.read_text())["labels"]
    assert sitk.ReadImage(str(probabilities)).GetNumberOfComponentsPerPixel() == 3


def test_mr_volume_given_to_a_ct_task_warns_but_segments(tiny_model_path, tmp_path, capsys):
    mr = ellipsoid_scene(seed=41)[0]
    mr = mr.with_array(np.clip(mr.array + 1000, 0, None) * 0.4)  # MR-like: >= 0, arbitrary scale
    source = write_volume(mr, tmp_path / "t1.nrrd")
    output = tmp_path / "labels.nii.gz"
    assert _segment(tiny_model_path, source, output, "--task", "abdomen-ct") == 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("warning: ") and "\n" not in err, err
    assert "do not look like CT" in err and "abdomen-ct" in err
    assert output.exists()


def test_ct_volume_for_an_mr_task_is_a_warning_not_an_error():
    from dataclasses import replace

    from helpers import tiny_metadata
    from DeepOrganSegLib.validation import task_warnings

    ct_task = tiny_metadata().tasks[0]
    mr_task = replace(ct_task, name="brain-mr", modality="MR")
    ct = ellipsoid_scene(seed=41)[0]
    assert task_warnings(ct, ct_task) == []
    (warning,) = task_warnings(ct, mr_task)
    assert "look like CT" in warning and "brain-mr expects MR" in warning


@pytest.mark.parametrize("air_share", [0.0, 0.005, 0.03, 0.2])
def test_a_volume_guessed_ct_is_never_warned_as_not_ct(air_share):
    """One modality guess: task auto's guess and the wrong-modality warnings agree, also for a
    CT cropped close to the body with only a few percent of air (3 %: between the 1st and 5th
    percentiles, which once told CT from MR in two places), which counts as CT."""
    from dataclasses import replace

    from helpers import tiny_metadata
    from DeepOrganSegLib.validation import guess_modality
    from DeepOrganSegLib.validation import task_warnings

    ct_task = tiny_metadata().tasks[0]
    mr_task = replace(ct_task, name="brain-mr", modality="MR")
    rng = np.random.default_rng(7)
    array = rng.normal(40.0, 20.0, (32, 40, 48)).astype(np.float32)  # soft tissue in HU
    array.reshape(-1)[rng.random(array.size) < air_share] = -1000.0  # air, scattered
    volume = Volume(array, (1.5, 1.5, 3.0))
    guessed = guess_modality(volume)
    assert guessed == ("CT" if air_share >= 0.02 else "MR")
    assert (task_warnings(volume, ct_task) == []) == (guessed == "CT")
    assert (task_warnings(volume, mr_task) == []) == (guessed == "MR")


# ---------------------------------------------------------------------------------------------
# The Slicer Logic: a refused volume is a failed run and the scene stays as it was.

SLICER_CASES = {
    "constant-image": (np.full((24, 32, 32), -1024.0, np.float32), "constant"),
    "nan-voxels": (np.where(_cube((24, 32, 32)) > -520, _cube((24, 32, 32)), np.nan)
                   .astype(np.float32), "NaN or Inf"),
}


@pytest.mark.parametrize("case", list(SLICER_CASES))
def test_slicer_logic_refuses_bad_volume_and_leaves_scene_unchanged(tiny_model_path, case):
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (MRML)")
    from Testing.Python.DeepOrganSegTestBodies import scene_snapshot
    from DeepOrganSegLib.mrml.job import (SegmentationFailed, SegmentationRequest,
                                          run_segmentation)
    from DeepOrganSegLib.mrml.nodes import add_volume_node
    from DeepOrganSegLib.options import SegmentationOptions

    array, message = SLICER_CASES[case]
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    node = add_volume_node(scene, Volume(array, spacing=(2.0, 2.0, 3.0)), case)
    before = scene_snapshot(scene)
    with pytest.raises(SegmentationFailed) as failed:
        run_segmentation(SegmentationRequest(node, tiny_model_path,
                                             options=SegmentationOptions(task="abdomen-ct")),
                         sys.executable)
    failure = failed.value.failure
    assert failure.exit_code == 2 and message in failure.message, failure
    assert "\n" not in failure.message
    assert scene_snapshot(scene) == before
    assert not failed.value.job.temporary_folder.exists()


# ---------------------------------------------------------------------------------------------
# Training data readers: a corrupt case in a Decathlon folder names the file.


def _msd_folder(folder: Path, cases: int = 2) -> Path:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for n in range(cases):
        image, labels = ellipsoid_scene(seed=n, shape=(12, 16, 20))
        write_volume(image, folder / "imagesTr" / f"liver_{n}.nii.gz")
        write_volume(labels, folder / "labelsTr" / f"liver_{n}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "liver", "2": "spleen"}, "modality": {"0": "CT"},
        "training": [{"image": f"./imagesTr/liver_{n}.nii.gz",
                      "label": f"./labelsTr/liver_{n}.nii.gz"} for n in range(cases)]}))
    return folder


@pytest.mark.parametrize("damage, pattern", [
    ("truncated-image", "liver_1.nii.gz: compressed data is truncated"),
    ("missing-label", "liver_1.nii.gz: no such file"),
    ("labelmap-is-text", "labelsTr/liver_1.nii.gz: compressed data is truncated or corrupt"),
])
def test_corrupt_case_in_msd_folder_names_the_file(tmp_path, damage, pattern):
    from training.data import CaseRef, load_case, read_msd_folder
    from DeepOrganSegLib.errors import InputError

    folder = _msd_folder(tmp_path)
    image, label = folder / "imagesTr" / "liver_1.nii.gz", folder / "labelsTr" / "liver_1.nii.gz"
    if damage == "truncated-image":
        image.write_bytes(image.read_bytes()[:200])
    elif damage == "missing-label":
        label.unlink()
    else:
        label.write_text("not an image")
    cases, names = read_msd_folder(folder)
    load_case(CaseRef("abdomen-ct", cases[0][0], image_path=str(cases[0][1]),
                      label_path=str(cases[0][2]), label_names=names))  # the intact case loads
    case_id, image_path, label_path = cases[1]
    with pytest.raises(InputError, match=pattern) as refused:
        load_case(CaseRef("abdomen-ct", case_id, image_path=str(image_path),
                          label_path=str(label_path), label_names=names))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("content, pattern", [
    ("{not json", "dataset.json: cannot read the dataset description"),
    ('{"labels": {"1": "liver"}}', "dataset.json: not an MSD dataset description .*training"),
    ('{"labels": {"one": "liver"}, "training": []}', "dataset.json: not an MSD dataset"),
    ("[1, 2]", "dataset.json: the dataset description must be a JSON object"),
])
def test_corrupt_msd_dataset_json_names_the_file(tmp_path, content, pattern):
    from training.data import read_msd_folder
    from DeepOrganSegLib.errors import InputError

    folder = _msd_folder(tmp_path, cases=1)
    (folder / "dataset.json").write_text(content)
    with pytest.raises(InputError, match=pattern):
        read_msd_folder(folder)
