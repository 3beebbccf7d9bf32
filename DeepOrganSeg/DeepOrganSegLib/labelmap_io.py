"""Writing labelmaps: NIfTI / NRRD / MHA, and Slicer's ``.seg.nrrd`` with named segments.

A ``.seg.nrrd`` is a labelmap NRRD whose header carries one ``SegmentN_*`` group per segment
(name, colour, label value, terminology), which Slicer loads as a segmentation node with our
names, colours and SNOMED CT terminology.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .model import LabelSpec
from .errors import InputError
from .volume import Volume
from .volume_io import write_atomically

__all__ = ["REMOVE_OFFSET", "LABELMAP_SUFFIXES", "check_output_path",
           "check_outputs_spare_inputs",
           "check_free_space", "write_labelmap", "terminology_entry"]

#: Scribble labelmaps (``deeporganseg refine``, the Slicer module's strokes): value ``v`` paints
#: "this is the organ of label value v", ``REMOVE_OFFSET + v`` "this is not that organ".
REMOVE_OFFSET = 128

LABELMAP_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def check_output_path(path: str | os.PathLike, suffixes: tuple[str, ...] = LABELMAP_SUFFIXES
                      ) -> Path:
    """Fail early (before any inference) on an output that is a folder, an unsupported suffix
    or an unwritable folder. A folder is named first: ``segment ct.nii.gz results/`` means a
    file inside it, not an unknown format."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name in it ending in "
                         f"{', '.join(suffixes)}")
    if not path.name.lower().endswith(suffixes):
        raise InputError(f"{path}: unsupported output format; use one of {', '.join(suffixes)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"{path}: output folder {folder} does not exist; create it first")
    try:  # a real write, not os.access: read-only file systems refuse even root
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"{path}: output folder {folder} is not writable "
                         f"({error.strerror or error}); choose another") from None
    return path


def _same_file(a: Path, b: Path) -> bool:
    """The same path, or the same file through a link (hard links and symlinks count)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs_spare_inputs(outputs: list[str | os.PathLike | None],
                               inputs: list[str | os.PathLike | None]) -> None:
    """Refuse, before any work, to write an output over a file the command reads (a scan, a
    model, a checkpoint), into an input DICOM folder, or two outputs to one file: a mistyped or
    tab-completed name must never destroy a user's data. ``None`` entries are ignored."""
    written = [Path(o) for o in outputs if o is not None]
    for number, output in enumerate(written):
        for source in (Path(i) for i in inputs if i is not None):
            if source.is_dir():
                if output.resolve().is_relative_to(source.resolve()):
                    raise InputError(f"{output}: lies inside the input folder {source}; writing "
                                     f"there would mix outputs into the series; choose another "
                                     f"folder")
            elif _same_file(output, source):
                raise InputError(f"{output}: is the input {source}; writing it would destroy "
                                 f"the input; choose another output name")
        for other in written[number + 1:]:
            if _same_file(output, other):
                raise InputError(f"{output}: named for two outputs; give each its own name")


def check_free_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Fail early when the output's file system has less room than ``needed_bytes``."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        status = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will tell
        return
    free = status.f_bavail * status.f_frsize
    if free < needed_bytes:
        raise InputError(f"{path}: only {free / 1e6:.1f} MB free in {folder}, the output needs "
                         f"up to {needed_bytes / 1e6:.1f} MB; free some space or choose another "
                         f"folder")


def terminology_entry(label: LabelSpec) -> str:
    """Slicer's ``TerminologyEntry`` tag value for ``label`` (SNOMED CT category/type/modifier)."""

    def coded(code: dict | None) -> str:
        return "^".join((code["scheme"], code["code"], code["meaning"])) if code else "^^"

    from .model.terminology import DICOM_MASTER_CONTEXT

    snomed = label.snomed
    return (f"{snomed.get('context') or DICOM_MASTER_CONTEXT}~"
            f"{coded(snomed['category'])}~{coded(snomed['type'])}~"
            f"{coded(snomed.get('type_modifier'))}~Anatomic codes - DICOM master list~^^~^^")


def _segment_metadata(labels: np.ndarray, specs: list[LabelSpec]) -> dict[str, str]:
    metadata = {"Segmentation_MasterRepresentation": "Binary labelmap",
                "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
                "Segmentation_ReferenceImageExtentOffset": "0 0 0"}
    k, j, i = labels.shape
    for index, spec in enumerate(specs):
        prefix = f"Segment{index}_"
        color = " ".join(f"{c / 255:.6f}" for c in spec.color)
        metadata.update({
            prefix + "ID": spec.name, prefix + "Name": spec.display_name,
            prefix + "Color": color, prefix + "ColorAutoGenerated": "0",
            prefix + "LabelValue": str(spec.value), prefix + "Layer": "0",
            prefix + "Extent": f"0 {i - 1} 0 {j - 1} 0 {k - 1}",
            prefix + "Tags": f"TerminologyEntry:{terminology_entry(spec)}|",
        })
    return metadata


def write_labelmap(labels: Volume, path: str | os.PathLike, specs: list[LabelSpec]) -> Path:
    """Write a uint8 labelmap atomically; ``.seg.nrrd`` also stores segment names/colours."""
    path = Path(path)
    image = labels.to_sitk(labels.array.astype(np.uint8, copy=False))
    if path.name.lower().endswith(".seg.nrrd"):
        for key, value in _segment_metadata(labels.array, specs).items():
            image.SetMetaData(key, value)
    return write_atomically(path, lambda tmp: sitk.WriteImage(image, str(tmp), True))
