"""Random orientation: the same anatomy stored with another direction matrix.

Real scans come in every axis order and sign (LPS, RAS, sagittal, coronal ...) and often
slightly oblique; :func:`reorient` gives a case's volumes one random permuted/flipped direction
(exact, no resampling) and, half of the time, an oblique tilt (up to 25 degrees; 10 degrees
mostly about the cranio-caudal axis for axial-only kinds), resampled about the volume's centre.
The anatomy stays where it was in patient space.
"""

from __future__ import annotations

import numpy as np

from ..volume import Volume
from .geometry import rotation_matrix

_AXIAL_CODES = tuple(a + b + c for a, b in (("L", "P"), ("L", "A"), ("R", "P"), ("R", "A"),
                                            ("P", "L"), ("A", "L"), ("P", "R"), ("A", "R"))
                     for c in "SI")


def _orientation_codes(axial_only: bool) -> tuple[str, ...]:
    """The orientation codes to draw from: the 16 axial ones, or all 48 axis orders and signs."""
    if axial_only:
        return _AXIAL_CODES
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    codes = []
    for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for flips in np.ndindex(2, 2, 2):
            codes.append("".join(letters[a][flips[a]] for a in order))
    return tuple(codes)


def reorient(volumes: list[Volume], rng: np.random.Generator, axial_only: bool,
             background: list[float]) -> list[Volume]:
    """Same random permuted/flipped, then possibly oblique, direction for every volume.

    Permutations and flips are exact; an oblique tilt (half of the cases) resamples: linearly for
    the first (image) volume, nearest-neighbour for the others (labels).
    """
    import SimpleITK as sitk

    codes = _orientation_codes(axial_only)
    code = codes[int(rng.integers(len(codes)))]
    images = [sitk.DICOMOrient(v.to_sitk(), code) for v in volumes]
    if rng.random() < 0.5:
        limit = 10.0 if axial_only else 25.0
        angles = np.radians(rng.uniform(-limit, limit, 3))
        if axial_only:
            angles[:2] *= 0.3
        tilt = rotation_matrix(angles)
        images = [_resample_rotated(img, tilt, interp, value) for img, interp, value in
                  zip(images, [sitk.sitkLinear] + [sitk.sitkNearestNeighbor] * (len(images) - 1),
                      background)]
    return [Volume.from_sitk(img) for img in images]


def _resample_rotated(image, tilt: np.ndarray, interpolator: int, background: float):
    """Resample ``image`` onto the same-size grid rotated by ``tilt`` about its centre."""
    import SimpleITK as sitk

    size = np.array(image.GetSize())
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    half = (size - 1) / 2 * spacing
    centre = np.array(image.GetOrigin()) + direction @ half
    new_direction = tilt @ direction
    origin = centre - new_direction @ half
    return sitk.Resample(image, image.GetSize(), sitk.Transform(), interpolator, origin.tolist(),
                         spacing.tolist(), new_direction.flatten().tolist(), background,
                         image.GetPixelID())
