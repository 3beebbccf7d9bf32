"""Synthetic anatomical phantoms: label maps from a parametric anatomy, images synthesised on them.

No labelled data set can be downloaded where DeepOrganSeg is developed, so the engine brings its
own.
Four kinds are generated (:data:`KINDS`):

``abdomen-ct``
    Abdominal CT from above the liver dome to the pelvis, in Hounsfield units, in one of three
    contrast phases (non-contrast, arterial, portal-venous).
``heart-mr``
    Whole-heart balanced-SSFP MR around the heart (bright blood, as in HVSMR 2016).
``brain-mr``
    T1-weighted brain MR made by deforming the ICBM152 2009 grey/white-matter maps bundled in the
    PyPI package ``nilearn``.
``body-ct``
    Whole-body CT from the neck (optionally the head) to the thighs, with a body-region label for
    every axial slice (:data:`REGIONS`), for the body-part classifier.

How a case is made
------------------
1. *Anatomy.* One parametric human body (``_Body``) in patient LPS millimetres serves abdomen-ct,
   body-ct and heart-mr: each organ is an analytic primitive (ellipsoid, capsule chain along a
   spline, superellipse cross-section) with random size, shape and position, painted in anatomical
   order so that organs touch (the kidney carves the liver, the psoas carves the kidney). A smooth
   random displacement field deforms every primitive, and a breathing shift moves the diaphragm and
   the upper-abdominal organs together.
2. *Maps.* Painting yields a *tissue* map (what sets the intensity: cortex vs medulla, gas vs
   gastric content) and an *organ* map (what the networks learn); the label map is the organ map
   restricted to the kind's label table.
3. *Image.* Each tissue gets a random mean intensity from published ranges for the modality and
   phase, plus a correlated texture; the image is rendered on a grid that is three times finer
   through-plane when slices are thick, blurred by the slice profile and the in-plane point-spread
   function, downsampled (partial volume), then given scanner noise (and an MR bias field).
4. *Geometry.* Optionally the array is re-oriented (flipped/permuted/oblique direction matrix) with
   the anatomy unchanged in patient coordinates.

Everything is deterministic from ``seed``: the anatomy, the intensities and the noise come from
independent streams, so changing the contrast phase changes the image but not the labels.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import ndimage as ndi

from .bodypart import REGIONS
from .errors import InputError
from .volume import Volume, write_volume

__all__ = [
    "KINDS", "PHASES", "LABELS", "MODALITIES", "HVSMR_LABELS", "Phantom",
    "make_phantom", "merge_labels", "hvsmr_labels", "add_phantom_command", "run_phantom_command",
]

KINDS = ("abdomen-ct", "heart-mr", "brain-mr", "body-ct")
PHASES = ("non-contrast", "arterial", "portal-venous")

_ABDOMEN_LABELS = {
    1: "liver", 2: "spleen", 3: "right_kidney", 4: "left_kidney", 5: "stomach", 6: "pancreas",
    7: "gallbladder", 8: "aorta", 9: "inferior_vena_cava",
}
LABELS: dict[str, dict[int, str]] = {
    "abdomen-ct": dict(_ABDOMEN_LABELS),
    "heart-mr": {
        1: "myocardium", 2: "left_ventricle", 3: "right_ventricle", 4: "left_atrium",
        5: "right_atrium", 6: "aorta", 7: "pulmonary_artery",
    },
    "brain-mr": {1: "csf", 2: "grey_matter", 3: "white_matter"},
    "body-ct": dict(_ABDOMEN_LABELS),
}
"""Label value -> name, per kind. Values are stable across versions."""

MODALITIES = {"abdomen-ct": "CT", "heart-mr": "MR", "brain-mr": "MR", "body-ct": "CT"}

HVSMR_LABELS = {1: "myocardium", 2: "blood_pool"}
"""The HVSMR 2016 two-label set (label values as in the challenge's ground truth)."""

_BLOOD_POOL = ("left_ventricle", "right_ventricle", "left_atrium", "right_atrium", "aorta",
               "pulmonary_artery")


@dataclass
class Phantom:
    """One synthetic case: image and label map on the same grid, plus what is needed to use them."""

    image: Volume  # float32; CT in HU, MR in arbitrary positive units (SynthSeg mode: [0, 1])
    labels: Volume  # uint8, same grid as image, 0 = background
    label_names: dict[int, str]  # value -> name; only the kind's target labels
    kind: str
    modality: str  # "CT" or "MR"
    slice_regions: np.ndarray | None  # body-ct: one REGIONS index per k-slice; None otherwise
    tissues: Volume | None = None  # uint8 tissue map behind the intensities (context included)
    tissue_names: dict[int, str] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)  # seed, phase, slice thickness (mm), ...


# ============================================================================ tissues and organs

_TISSUES = (
    "air", "gas", "lung", "fat", "muscle", "bone_cortical", "bone_marrow", "liver", "liver_vessel",
    "liver_lesion", "spleen", "kidney_cortex", "kidney_medulla", "stomach_wall", "gastric_content",
    "bowel_wall", "bowel_content", "pancreas", "bile", "urine", "arterial_blood",
    "right_heart_blood", "caval_blood", "portal_blood", "myocardium", "disc", "csf", "cartilage",
    "thyroid", "brain", "soft_tissue", "grey_matter", "white_matter", "table",
)
_T = {name: value for value, name in enumerate(_TISSUES)}  # air = 0 (outside the body)

_ORGANS = ("none",) + tuple(dict.fromkeys(
    name for table in LABELS.values() for name in table.values()))
_O = {name: value for value, name in enumerate(_ORGANS)}

# Mean HU per tissue: (non-contrast, late arterial, portal-venous) ranges, texture SD (HU). Each
# case draws its means uniformly inside these ranges, which lie inside the published ranges cited
# in docs/phantoms.md with a margin for texture, partial volume and noise.
_CT_HU: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float], float]] = {
    "air": ((-1000, -1000), (-1000, -1000), (-1000, -1000), 0.0),
    "gas": ((-1000, -960), (-1000, -960), (-1000, -960), 10.0),
    "lung": ((-870, -780), (-860, -770), (-860, -770), 30.0),
    "fat": ((-112, -88), (-112, -88), (-112, -88), 10.0),
    "muscle": ((42, 52), (45, 56), (47, 57), 10.0),
    "bone_cortical": ((900, 1300), (900, 1300), (900, 1300), 80.0),
    "bone_marrow": ((160, 260), (170, 270), (180, 280), 40.0),
    "liver": ((54, 66), (65, 85), (97, 123), 8.0),
    "liver_vessel": ((35, 45), (90, 140), (150, 190), 10.0),
    "liver_lesion": ((20, 40), (40, 70), (40, 70), 10.0),
    "spleen": ((42, 52), (110, 150), (105, 135), 8.0),
    "kidney_cortex": ((30, 42), (160, 220), (158, 192), 12.0),
    "kidney_medulla": ((28, 40), (60, 100), (110, 160), 12.0),
    "stomach_wall": ((35, 45), (80, 120), (70, 110), 10.0),
    "gastric_content": ((-10, 30), (-10, 30), (-10, 30), 15.0),
    "bowel_wall": ((35, 45), (70, 110), (80, 120), 10.0),
    "bowel_content": ((-20, 40), (-20, 40), (-20, 40), 25.0),
    "pancreas": ((35, 50), (100, 150), (60, 120), 12.0),
    "bile": ((0, 20), (0, 20), (0, 20), 5.0),
    "urine": ((0, 15), (0, 15), (0, 15), 5.0),
    "arterial_blood": ((38, 47), (265, 380), (152, 235), 10.0),
    "right_heart_blood": ((35, 50), (150, 300), (150, 220), 12.0),
    "caval_blood": ((35, 50), (60, 110), (85, 175), 10.0),
    "portal_blood": ((35, 50), (100, 150), (160, 220), 10.0),
    "myocardium": ((40, 55), (100, 140), (90, 120), 10.0),
    "disc": ((70, 110), (70, 110), (70, 110), 10.0),
    "csf": ((0, 15), (0, 15), (0, 15), 5.0),
    "cartilage": ((100, 200), (100, 200), (100, 200), 30.0),
    "thyroid": ((80, 110), (150, 220), (120, 170), 12.0),
    "brain": ((30, 40), (32, 42), (33, 43), 4.0),
    "soft_tissue": ((35, 50), (60, 90), (70, 100), 10.0),
    "table": ((250, 600), (250, 600), (250, 600), 30.0),  # carbon-fibre shells of the CT table
}

# Balanced SSFP (whole-heart MR), relative to blood ~ 0.9: (range, texture SD).
_BSSFP = {
    "air": ((0.0, 0.01), 0.0), "gas": ((0.0, 0.02), 0.005), "lung": ((0.03, 0.08), 0.02),
    "fat": ((0.75, 0.95), 0.04), "muscle": ((0.15, 0.25), 0.02),
    "bone_cortical": ((0.02, 0.06), 0.01), "bone_marrow": ((0.45, 0.65), 0.05),
    "liver": ((0.22, 0.32), 0.02), "liver_vessel": ((0.7, 0.9), 0.04),
    "liver_lesion": ((0.4, 0.6), 0.03), "spleen": ((0.32, 0.42), 0.02),
    "kidney_cortex": ((0.38, 0.5), 0.03), "kidney_medulla": ((0.45, 0.6), 0.03),
    "stomach_wall": ((0.22, 0.32), 0.02), "gastric_content": ((0.55, 0.85), 0.06),
    "bowel_wall": ((0.22, 0.32), 0.02), "bowel_content": ((0.45, 0.8), 0.08),
    "pancreas": ((0.28, 0.38), 0.03), "bile": ((0.8, 1.0), 0.03), "urine": ((0.85, 1.0), 0.03),
    "arterial_blood": ((0.8, 1.0), 0.04), "right_heart_blood": ((0.75, 0.95), 0.04),
    "caval_blood": ((0.7, 0.95), 0.04), "portal_blood": ((0.7, 0.95), 0.04),
    "myocardium": ((0.15, 0.25), 0.02), "disc": ((0.45, 0.65), 0.03),
    "csf": ((0.85, 1.0), 0.03), "cartilage": ((0.28, 0.38), 0.03), "thyroid": ((0.3, 0.4), 0.03),
    "brain": ((0.35, 0.45), 0.02), "soft_tissue": ((0.28, 0.38), 0.03),
}

# T1-weighted (MPRAGE-like) brain MR, relative to white matter ~ 0.8: (range, texture SD).
_T1W = {
    "air": ((0.0, 0.01), 0.0), "csf": ((0.1, 0.22), 0.02), "grey_matter": ((0.42, 0.55), 0.025),
    "white_matter": ((0.72, 0.85), 0.02), "fat": ((0.8, 1.0), 0.05),
    "muscle": ((0.3, 0.4), 0.03), "bone_cortical": ((0.02, 0.07), 0.01),
    "bone_marrow": ((0.5, 0.7), 0.05),
}


# ============================================================================ grid and geometry

@dataclass(frozen=True)
class _Grid:
    """An LPS-aligned voxel grid (identity direction): shape (k, j, i), spacing (si, sj, sk) mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # centre of voxel (0, 0, 0), patient LPS mm

    @classmethod
    def centred(cls, shape: Sequence[int], spacing: Sequence[float],
                centre: Sequence[float]) -> "_Grid":
        """The grid whose centre voxel sits at ``centre`` (LPS mm)."""
        extent = (np.array(shape[::-1]) - 1) * np.array(spacing)
        return cls(tuple(int(s) for s in shape), tuple(float(s) for s in spacing),
                   tuple(float(v) for v in np.asarray(centre) - extent / 2))

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along x (i), y (j), z (k), in mm."""
        k, j, i = self.shape
        return tuple(  # type: ignore[return-value]
            (self.origin[a] + np.arange(n) * self.spacing[a]).astype(np.float32)
            for a, n in enumerate((i, j, k)))

    def subdivided(self, n: int) -> "_Grid":
        """The grid with ``n`` (odd) sub-slices per slice, centred on the original slices."""
        if n == 1:
            return self
        k, j, i = self.shape
        dz = self.spacing[2] / n
        origin = (self.origin[0], self.origin[1], self.origin[2] - (n - 1) / 2 * dz)
        return _Grid((k * n, j, i), (self.spacing[0], self.spacing[1], dz), origin)


@dataclass(frozen=True)
class _Acquisition:
    """Where and how finely a case is sampled."""

    grid: _Grid
    thickness: float  # slice thickness (FWHM-equivalent box), mm
    subslices: int  # 1 or 3 render sub-slices per output slice


def _choose_acquisition(rng: np.random.Generator, default_shape: tuple[int, int, int],
                        fov_range: tuple[tuple[float, float], ...], centre: np.ndarray,
                        shape: tuple[int, int, int] | None,
                        spacing: tuple[float, float, float] | None) -> _Acquisition:
    """Grid from the user's shape/spacing, filling the gaps from a random field of view (mm).

    ``fov_range`` gives (low, high) extents in mm along x, y, z. With no spacing the grid spans a
    random field of view and the slice thickness is drawn from 0.7-5 mm; with a spacing the slices
    are contiguous (thickness = slice spacing).
    """
    fov = np.array([rng.uniform(lo, hi) for lo, hi in fov_range])
    fov[1] = fov[0] if fov_range[0] == fov_range[1] else fov[1]
    thickness = float(rng.uniform(0.7, 5.0))
    if spacing is None:
        shape = shape or default_shape
        spacing_xyz = fov / np.array(shape[::-1])
    else:
        spacing_xyz = np.asarray(spacing, dtype=float)
        if shape is None:
            mid = np.array([(lo + hi) / 2 for lo, hi in fov_range])
            shape = tuple(int(v) for v in np.clip(np.round(mid / spacing_xyz), 16, 512)[::-1])
        thickness = float(spacing_xyz[2])
    in_plane = float(min(spacing_xyz[0], spacing_xyz[1]))
    subslices = 3 if spacing_xyz[2] >= 2.0 * in_plane else 1
    grid = _Grid.centred(shape, spacing_xyz, centre)
    return _Acquisition(grid, thickness, subslices)


# ============================================================================ random fields

def _bspline_taps(position: np.ndarray, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (each n x 4) of the cubic B-spline at continuous lattice indices."""
    position = np.clip(np.asarray(position, dtype=float), 0.0, n_in - 1.0)
    base = np.floor(position).astype(int)
    t = position - base
    weights = np.stack([(1 - t) ** 3, 3 * t ** 3 - 6 * t ** 2 + 4,
                        -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1, t ** 3], axis=1) / 6.0
    indices = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return indices, weights.astype(np.float32)


def _interpolate_axis(array: np.ndarray, axis: int, position: np.ndarray) -> np.ndarray:
    """Cubic B-spline interpolation of ``array`` along one axis at continuous indices.

    Gathers the four non-zero taps (no dense matrix, no BLAS threads that would fight training
    workers for the cores).
    """
    indices, weights = _bspline_taps(position, array.shape[axis])
    shape = [1] * array.ndim
    shape[axis] = -1
    result = np.take(array, indices[:, 0], axis=axis) * weights[:, 0].reshape(shape)
    for tap in range(1, 4):
        result += np.take(array, indices[:, tap], axis=axis) * weights[:, tap].reshape(shape)
    return result


def _separable(coarse: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """Cubic B-spline interpolation of a (k, j, i) lattice at continuous (k, j, i) indices."""
    out = coarse.astype(np.float32)
    for axis in (2, 1, 0):
        out = _interpolate_axis(out, axis, positions[axis])
    return out


def _upsample(coarse: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Smoothly enlarge a small (k, j, i) field to ``shape`` by separable cubic B-splines."""
    return _separable(coarse, [np.linspace(0.0, c - 1.0, s) for c, s in zip(coarse.shape, shape)])


def _noise_field(rng: np.random.Generator, grid: _Grid, correlation_mm: float) -> np.ndarray:
    """Gaussian random field on ``grid`` with unit SD and about ``correlation_mm`` correlation."""
    spacing = np.array(grid.spacing[::-1])  # (sk, sj, si)
    extent = np.array(grid.shape) * spacing
    coarse_shape = tuple(int(v) for v in np.maximum(
        np.ceil(extent / np.maximum(spacing, correlation_mm)), 4))
    field = _upsample(rng.standard_normal(coarse_shape, dtype=np.float32), grid.shape)
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return field


def _displacement(rng: np.random.Generator, grid: _Grid, amplitude_mm: float, control_mm: float,
                  half_extent_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth random displacement (dx, dy, dz) in mm, fixed in patient space.

    Random values on a lattice of control points every ``control_mm`` within +-``half_extent_mm``
    (x, y, z) of the patient origin are B-spline interpolated at the grid's voxels, so a case
    deforms the same way whatever grid it is rendered on.
    """
    counts = [int(np.ceil(2 * h / control_mm)) + 1 for h in half_extent_mm]  # x, y, z
    positions = [(axis + h) / control_mm for axis, h in zip(grid.axes(), half_extent_mm)]
    fields = []
    for _ in range(3):
        lattice = rng.standard_normal(counts[::-1]).astype(np.float32) * amplitude_mm
        fields.append(_separable(lattice, positions[::-1]))
    return fields[0], fields[1], fields[2]


# ============================================================================ shapes and painting

@dataclass(frozen=True)
class _View:
    """Deformed coordinates (mm) of the voxels inside one bounding box, and the box's slices."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    box: tuple[slice, slice, slice]


@dataclass(frozen=True)
class _Shape:
    """A solid in patient mm: a bounding box and an inside test on deformed coordinates."""

    lo: np.ndarray
    hi: np.ndarray
    inside: Callable[[_View], np.ndarray]

    def __sub__(self, other: "_Shape") -> "_Shape":
        return _Shape(self.lo, self.hi, lambda v: self.inside(v) & ~other.inside(v))

    def __and__(self, other: "_Shape") -> "_Shape":
        return _Shape(np.maximum(self.lo, other.lo), np.minimum(self.hi, other.hi),
                      lambda v: self.inside(v) & other.inside(v))

    def where(self, predicate: Callable[[_View], np.ndarray]) -> "_Shape":
        """The part of the shape where ``predicate`` holds."""
        return _Shape(self.lo, self.hi, lambda v: self.inside(v) & predicate(v))


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _frame(primary: Sequence[float], secondary: Sequence[float]) -> np.ndarray:
    """Orthonormal axes (columns): ``primary``, then ``secondary`` made orthogonal to it."""
    a = _unit(primary)
    b = np.asarray(secondary, dtype=float)
    b = _unit(b - (b @ a) * a)
    return np.stack([a, b, np.cross(a, b)], axis=1)


def _ellipsoid(centre: Sequence[float], semi: Sequence[float],
               axes: np.ndarray | None = None) -> _Shape:
    """Ellipsoid with semi-axes (mm) along the columns of ``axes`` (default x, y, z)."""
    c = np.asarray(centre, dtype=np.float32)
    s = np.asarray(semi, dtype=np.float32)
    if axes is None:
        def inside(v: _View) -> np.ndarray:
            return (((v.x - c[0]) / s[0]) ** 2 + ((v.y - c[1]) / s[1]) ** 2
                    + ((v.z - c[2]) / s[2]) ** 2) <= 1.0
        half = s
    else:
        r = (np.asarray(axes, dtype=np.float32) / s[None, :])  # column a: axis_a / semi_a

        def inside(v: _View) -> np.ndarray:
            dx, dy, dz = v.x - c[0], v.y - c[1], v.z - c[2]
            total = (dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0]) ** 2
            total += (dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1]) ** 2
            total += (dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2]) ** 2
            return total <= 1.0
        half = np.sqrt(((np.asarray(axes) * s[None, :]) ** 2).sum(axis=1))
    return _Shape(c - half, c + half, inside)


def _capsule(p0: np.ndarray, p1: np.ndarray, r0: float, r1: float) -> _Shape:
    """Segment ``p0``-``p1`` swept by a sphere whose radius (mm) goes linearly from r0 to r1."""
    p0 = np.asarray(p0, dtype=np.float32)
    d = np.asarray(p1, dtype=np.float32) - p0
    length2 = max(float(d @ d), 1e-6)

    def inside(v: _View) -> np.ndarray:
        ex, ey, ez = v.x - p0[0], v.y - p0[1], v.z - p0[2]
        t = np.clip((ex * d[0] + ey * d[1] + ez * d[2]) / length2, 0.0, 1.0)
        ex -= t * d[0]
        ey -= t * d[1]
        ez -= t * d[2]
        radius = r0 + t * (r1 - r0)
        return ex * ex + ey * ey + ez * ez <= radius * radius
    r = max(r0, r1)
    return _Shape(np.minimum(p0, p0 + d) - r, np.maximum(p0, p0 + d) + r, inside)


def _spline(points: Sequence[Sequence[float]], radii: Sequence[float],
            step_mm: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom curve through ``points`` sampled about every ``step_mm``; radii interpolated."""
    p = np.asarray(points, dtype=float)
    r = np.asarray(radii, dtype=float)
    padded = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out_p, out_r = [], []
    for s in range(len(p) - 1):
        a, b, c, d = padded[s:s + 4]
        n = max(1, int(np.ceil(np.linalg.norm(c - b) / step_mm)))
        t = (np.arange(n) / n)[:, None]
        out_p.append(0.5 * ((2 * b) + (-a + c) * t + (2 * a - 5 * b + 4 * c - d) * t ** 2
                            + (-a + 3 * b - 3 * c + d) * t ** 3))
        out_r.append(r[s] + (r[s + 1] - r[s]) * t[:, 0])
    out_p.append(p[-1:])
    out_r.append(r[-1:])
    return np.vstack(out_p), np.concatenate(out_r)


def _tube(points: Sequence[Sequence[float]], radii: Sequence[float] | float,
          step_mm: float = 10.0) -> list[_Shape]:
    """A tube along a smooth curve through ``points``, as a chain of capsules (radii in mm)."""
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(points),))
    p, r = _spline(points, radii, step_mm)
    return [_capsule(p[s], p[s + 1], r[s], r[s + 1]) for s in range(len(p) - 1)]


def _box(lo: Sequence[float], hi: Sequence[float],
         inside: Callable[[_View], np.ndarray]) -> _Shape:
    return _Shape(np.asarray(lo, dtype=np.float32), np.asarray(hi, dtype=np.float32), inside)


def _random_walk(rng: np.random.Generator, start: np.ndarray, centre: np.ndarray,
                 semi: np.ndarray, steps: int, step_mm: float) -> np.ndarray:
    """A persistent random walk (points, mm) that turns back whenever it leaves an ellipsoid."""
    kicks = rng.normal(0.0, 0.45, (steps, 3))
    points = np.empty((steps + 1, 3))
    points[0] = start
    direction = _unit(rng.normal(size=3))
    for n in range(steps):
        direction = direction + kicks[n]
        direction /= np.sqrt(direction @ direction)
        outward = (points[n] + direction * step_mm - centre) / semi
        if outward @ outward > 1.0:
            direction = _unit(direction - 1.5 * _unit(outward / semi))
        points[n + 1] = points[n] + direction * step_mm
    return points


class _Canvas:
    """Tissue and organ maps on a render grid, painted shape by shape (later shapes win)."""

    def __init__(self, grid: _Grid, displacement: tuple[np.ndarray, np.ndarray, np.ndarray]):
        ax, ay, az = grid.axes()
        dx, dy, dz = displacement
        self.grid = grid
        self.axes = (ax, ay, az)
        self.x = dx + ax[None, None, :]
        self.y = dy + ay[None, :, None]
        self.z = dz + az[:, None, None]
        self.margin = float(max(np.abs(d).max() for d in displacement)) if dx.size else 0.0
        self.tissue = np.zeros(grid.shape, dtype=np.uint8)
        self.organ = np.zeros(grid.shape, dtype=np.uint8)

    def box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Array slices covering the mm box [lo, hi] (plus the deformation margin), or None."""
        slices = []
        for axis in (2, 1, 0):  # k, j, i
            a = self.axes[axis]
            step = self.grid.spacing[axis]
            first = int(np.floor((lo[axis] - self.margin - a[0]) / step))
            last = int(np.ceil((hi[axis] + self.margin - a[0]) / step)) + 1
            first, last = max(first, 0), min(last, a.size)
            if first >= last:
                return None
            slices.append(slice(first, last))
        return tuple(slices)  # type: ignore[return-value]

    def view(self, box: tuple[slice, slice, slice]) -> _View:
        return _View(self.x[box], self.y[box], self.z[box], box)

    def paint(self, shape: _Shape | Iterable[_Shape], tissue: str, organ: str = "none",
              within: Sequence[str] | None = None) -> None:
        """Set ``tissue``/``organ`` inside ``shape``, over voxels whose tissue is ``within``."""
        if not isinstance(shape, _Shape):
            for part in shape:
                self.paint(part, tissue, organ, within)
            return
        box = self.box(shape.lo, shape.hi)
        if box is None:
            return
        mask = shape.inside(self.view(box))
        if within is not None:
            mask &= _tissue_lut(tuple(within))[self.tissue[box]]
        self.tissue[box][mask] = _T[tissue]
        self.organ[box][mask] = _O[organ]


@functools.lru_cache(maxsize=None)
def _tissue_lut(names: tuple[str, ...]) -> np.ndarray:
    lut = np.zeros(256, dtype=bool)
    lut[[_T[n] for n in names]] = True
    return lut


# ============================================================================ the parametric body

_Y_SPINE = np.array([  # z (mm, reference body), y of the vertebral body centre (mm)
    (620, 30), (490, 30), (370, 40), (300, 52), (200, 56), (100, 50), (30, 42), (-60, 36),
    (-120, 48), (-170, 70), (-230, 88), (-300, 90)])
_BODY_PROFILE = np.array([  # z, semi-axis x, semi-axis y, centre y of the muscle boundary (mm)
    (700, 55, 52, 20), (480, 55, 55, 22), (405, 60, 58, 24), (385, 125, 80, 10),
    (350, 148, 92, 6),
    (250, 150, 98, 4), (120, 148, 100, 4), (0, 138, 100, 6), (-100, 145, 100, 6),
    (-220, 155, 98, 6), (-330, 150, 92, 6), (-900, 150, 92, 6)])
_CAVITY_SCALE = np.array([  # z, abdominal cavity size relative to the inner wall (pelvic funnel)
    (-100, 1.0), (-180, 0.65), (-250, 0.42), (-300, 0.22), (-320, 0.0)])
# Vertebrae from C1 down to L5: (name, body height mm, disc below mm).
_VERTEBRAE = ([(f"C{n}", 14.0, 5.0) for n in range(1, 8)]
              + [(f"T{n}", 17.0 + 0.5 * n, 5.5) for n in range(1, 13)]
              + [(f"L{n}", 28.0, 10.0) for n in range(1, 6)])
_Z_S1_TOP = -135.0  # top of the sacrum, reference body (mm); z = 0 is near the L1/L2 disc


class _Body:
    """One random adult: sizes, fat, breathing, and the landmarks derived from them (mm, LPS).

    The reference anatomy is written in millimetres for a 1.75 m adult (x to the patient's left,
    y posterior, z superior, z = 0 near the L1/L2 disc); :meth:`p` maps a reference point onto
    this body.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.w = rng.uniform(0.88, 1.12)  # left-right scale
        self.d = rng.uniform(0.88, 1.15)  # antero-posterior scale
        self.h = rng.uniform(0.92, 1.08)  # cranio-caudal scale
        self.fat = rng.uniform(5.0, 40.0)  # subcutaneous fat, mm
        self.wall = rng.uniform(7.0, 14.0)  # abdominal wall muscle, mm
        self.breath = rng.uniform(-15.0, 15.0)  # diaphragm shift, mm (negative = inspiration)
        self.vertebrae = self._stack_vertebrae()
        self.z_dome_right = self.h * 118.0 + self.breath + rng.normal(0, 5)
        self.z_dome_left = self.h * 102.0 + self.breath + rng.normal(0, 5)
        self.z_apex = self.vertebrae["T1"][1] + 15.0
        self.z_skull_base = self.vertebrae["C1"][1] + 5.0
        self.z_iliac_crest = self.h * -85.0
        self.z_ischium = self.h * -305.0
        # arms: at the sides (as in most abdominal CT of the sick) or raised out of the field
        self.arms_down = rng.random() < 0.55
        self.arm_radius = rng.uniform(42.0, 60.0) * self.w  # mm, skin to skin
        self.arm_gap = rng.uniform(3.0, 45.0)  # mm between the trunk's skin and the arm
        self.table_gap = rng.uniform(0.0, 8.0)  # mm between the back's skin and the table

    @property
    def arm_extent(self) -> float:
        """How far (mm) the arms reach beyond the trunk's skin on each side (0 when raised)."""
        return self.arm_gap + 2 * self.arm_radius if self.arms_down else 0.0

    # --------------------------------------------------------------------------- reference mapping
    def p(self, x: float, y: float, z: float, jitter: float = 0.0, upper_abdomen: bool = False
          ) -> np.ndarray:
        """A reference point (mm) mapped onto this body, with optional random jitter (SD, mm)."""
        point = np.array([x * self.w, y * self.d, z * self.h])
        if upper_abdomen:
            point[2] += self.breath
        if jitter:
            point += self.rng.normal(0.0, jitter, 3)
        return point

    def scale(self, semi: Sequence[float], variability: float = 0.12) -> np.ndarray:
        """Semi-axes (mm) scaled to this body and varied by +-``variability`` each."""
        s = np.asarray(semi, dtype=float) * np.array([self.w, self.d, self.h])
        return s * self.rng.uniform(1 - variability, 1 + variability, 3)

    def _stack_vertebrae(self) -> dict[str, tuple[float, float, float]]:
        """name -> (bottom z, top z, body height) of each vertebral body, stacked up from S1."""
        z = _Z_S1_TOP * self.h
        levels = {}
        for name, height, disc in reversed(_VERTEBRAE):
            z += disc * self.h
            levels[name] = (z, z + height * self.h, height * self.h)
            z += height * self.h
        return levels

    # --------------------------------------------------------------------------- profiles
    def y_spine(self, z: np.ndarray | float) -> np.ndarray:
        """y (mm) of the vertebral-body centre line at height z."""
        return np.interp(np.asarray(z) / self.h, _Y_SPINE[::-1, 0], _Y_SPINE[::-1, 1]) * self.d

    def wall_ellipse(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Semi-axes (a, b) and centre y of the outer muscle boundary at heights z (mm)."""
        zr = np.asarray(z) / self.h
        ref = _BODY_PROFILE[::-1]
        a = np.interp(zr, ref[:, 0], ref[:, 1]) * self.w
        b = np.interp(zr, ref[:, 0], ref[:, 2]) * self.d
        yc = np.interp(zr, ref[:, 0], ref[:, 3]) * self.d
        return a, b, yc

    def cavity_scale(self, z: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(z) / self.h, _CAVITY_SCALE[::-1, 0], _CAVITY_SCALE[::-1, 1])

    def z_diaphragm(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Height (mm) of the diaphragm's upper surface: two domes and the central tendon."""
        y0 = np.float32(-5.0 * self.d)
        dy = (y - y0) * np.where(y > y0, np.float32(1 / (90.0 * self.d)),
                                 np.float32(1 / (130.0 * self.d)))
        dy *= dy
        depth = np.float32(75.0)
        wx = np.float32(1 / (75.0 * self.w))
        right = self.z_dome_right - depth * (((x + np.float32(70.0 * self.w)) * wx) ** 2 + dy)
        left = self.z_dome_left - depth * (((x - np.float32(70.0 * self.w)) * wx) ** 2 + dy)
        centre = self.z_dome_left - 12.0 - depth * ((x * np.float32(1 / (70.0 * self.w))) ** 2 + dy)
        return np.maximum(np.maximum(right, left), centre).astype(np.float32)

    def diaphragm_map(self, x: np.ndarray, y: np.ndarray, z_axis: np.ndarray) -> np.ndarray:
        """:meth:`z_diaphragm` on a grid, computed only for the slices it can cross (mm)."""
        z_map = np.empty(x.shape, dtype=np.float32)
        top = max(self.z_dome_right, self.z_dome_left) + 10.0
        below = z_axis < top - 200.0
        above = z_axis > top
        z_map[below] = 1e4  # far below the domes: all abdomen
        z_map[above] = -1e4  # above them: all thorax
        slab = ~(below | above)
        if slab.any():
            z_map[slab] = self.z_diaphragm(x[slab], y[slab])
        return z_map

    def region_of(self, z: float) -> int:
        """Index into REGIONS of an axial slice at height z (mm, body coordinates)."""
        if z > self.z_skull_base:
            return REGIONS.index("head")
        if z > self.z_apex:
            return REGIONS.index("neck")
        if z > self.z_dome_right:
            return REGIONS.index("chest")
        if z > self.z_iliac_crest:
            return REGIONS.index("abdomen")
        if z > self.z_ischium:
            return REGIONS.index("pelvis")
        return REGIONS.index("legs")


# ============================================================================ painting the body

_ABDOMINAL_SPACE = ("fat", "bowel_wall", "bowel_content", "gas", "liver", "liver_vessel",
                    "liver_lesion", "spleen", "stomach_wall", "gastric_content", "pancreas",
                    "bile", "kidney_cortex", "kidney_medulla", "urine", "soft_tissue",
                    "portal_blood", "caval_blood", "arterial_blood")


class _TorsoPainter:
    """Paints one :class:`_Body` onto a canvas, system by system, in anatomical order."""

    def __init__(self, body: _Body, canvas: _Canvas, rng: np.random.Generator,
                 textures: np.random.Generator, with_head: bool):
        """``rng`` draws the anatomy (a fixed number of draws, whatever the grid); ``textures``
        draws the grid-sized random fields (vessels, bowel gas, pancreatic lobulation)."""
        self.b = body
        self.c = canvas
        self.rng = rng
        self.textures = textures
        self.with_head = with_head
        self.fields: dict[str, np.ndarray] = {}
        self._abdominal = np.zeros(canvas.grid.shape, dtype=bool)
        self.z_dia = np.zeros(canvas.grid.shape, dtype=np.float32)  # set by body_wall()
        self.aorta_scale = rng.uniform(0.85, 1.2)  # aortic calibre factor
        self.ivc_radius = 11.0 * rng.uniform(0.8, 1.2)  # mm

    def field(self, name: str, correlation_mm: float) -> np.ndarray:
        """A cached unit-SD random field (for bowel loops, vessels and gas)."""
        if name not in self.fields:
            self.fields[name] = _noise_field(self.textures, self.c.grid, correlation_mm)
        return self.fields[name]

    def paint_all(self) -> None:
        self.body_wall()
        self.thorax()
        self.bowel()
        self.liver()
        self.gallbladder()
        self.spleen()
        self.stomach()
        self.pancreas()
        self.kidneys()
        self.pelvic_organs()
        self.abdominal_vessels()
        self.heart()
        self.mediastinum()
        self.neck()
        self.muscles()
        self.spine()
        self.ribs_and_shoulders()
        self.pelvis_and_legs_bones()
        if self.with_head:
            self.head()

    # --------------------------------------------------------------------------- body wall
    def body_wall(self) -> None:
        """Skin/subcutaneous fat, muscle, and the abdominal and thoracic cavities."""
        b, c = self.b, self.c
        z_axis = c.axes[2]
        a, bb, yc = (v[:, None, None].astype(np.float32) for v in b.wall_ellipse(z_axis))
        dy = c.y - yc
        x2 = c.x * c.x

        def ellipse(offset: np.ndarray | float, scale: np.ndarray | float = 1.0,
                    back: np.ndarray | float = 0.0) -> np.ndarray:
            """Inside the muscle ellipse grown by ``offset`` mm (``back`` mm less posteriorly)."""
            semi_x = (a + offset) * scale
            semi_y = (bb + offset - back / 2) * scale
            return x2 / (semi_x * semi_x) + ((dy + back / 2) / semi_y) ** 2 <= 1.0

        fat = b.fat * np.interp(z_axis / b.h, [-900, -330, -100, 100, 350, 405, 700],
                                [0.8, 1.0, 1.0, 0.6, 0.5, 0.35, 0.3])[:, None, None]
        trunk = ((z_axis < b.z_skull_base + 20) & (z_axis >= -330 * b.h))[:, None, None]
        body = (ellipse(fat.astype(np.float32), back=0.4 * fat.astype(np.float32)) & trunk) \
            | self._legs(b.fat * 0.8, z_axis)
        muscle = (ellipse(0.0) & trunk) | self._legs(0.0, z_axis)
        c.tissue[body] = _T["fat"]
        c.tissue[muscle] = _T["muscle"]

        self.z_dia = b.diaphragm_map(c.x, c.y, z_axis)
        cav = b.cavity_scale(z_axis)[:, None, None].astype(np.float32)
        gutter = c.y < b.y_spine(z_axis)[:, None, None] + 15.0 * b.d + 0.004 * x2
        abdominal = (ellipse(-b.wall, np.maximum(cav, 1e-3)) & (c.z < self.z_dia - 4.0)
                     & (cav > 0) & gutter)
        c.tissue[abdominal] = _T["fat"]
        self._abdominal = abdominal

        chest = ellipse(-b.wall - 6.0) & (c.z > self.z_dia) & self._below_apex(c.x, c.y, c.z)
        c.tissue[chest] = _T["lung"]
        self._lung_vessels(chest)
        self._arms(fat)
        self._table()

    def _arms(self, fat: np.ndarray) -> None:
        """Upper arms and forearms at the trunk's sides: skin fat, muscle, a long bone."""
        b, c = self.b, self.c
        if not b.arms_down:
            return
        z_axis = c.axes[2]
        a, _, yc = b.wall_ellipse(z_axis)
        shoulder, wrist = b.z_apex - 30.0, b.z_iliac_crest - 120.0 * b.h
        along = np.clip((z_axis - wrist) / (shoulder - wrist), 0.0, 1.0)
        radius = b.arm_radius * (0.72 + 0.28 * along)  # forearms are thinner
        x_centre = a + fat[:, 0, 0] + b.arm_gap + radius
        y_centre = yc + self.rng.uniform(-25.0, 25.0) * b.d
        inside_z = (z_axis > wrist) & (z_axis < shoulder)
        skin = np.interp(along, [0, 1], [4.0, 12.0])  # mm of fat under the arm's skin
        bone = np.full_like(radius, 11.0)  # humerus / forearm bones, mm
        layers = (("fat", radius), ("muscle", radius - skin), ("bone_cortical", bone),
                  ("bone_marrow", bone - 3.5))
        for side in (-1.0, 1.0):
            dx = c.x - np.float32(side) * x_centre.astype(np.float32)[:, None, None]
            dy = c.y - y_centre.astype(np.float32)[:, None, None]
            r2 = dx * dx + dy * dy
            arm = np.zeros(c.grid.shape, dtype=bool)
            for tissue, semi in layers:
                semi = semi.astype(np.float32)[:, None, None]
                mask = (r2 <= semi * semi) & inside_z[:, None, None]
                mask &= (c.tissue == _T["air"]) if tissue == "fat" else arm
                arm |= mask
                c.tissue[mask] = _T[tissue]

    def _table(self) -> None:
        """The CT table under the back: two curved carbon-fibre shells around a foam core."""
        b, c = self.b, self.c
        central = (c.tissue[:, :, np.abs(c.axes[0]) < 60.0] != _T["air"]).any(axis=2)
        filled = central.any(axis=1)
        if not filled.any():
            return
        deepest = central.shape[1] - 1 - np.argmax(central[filled][:, ::-1], axis=1)
        back = float(c.axes[1][int(np.median(deepest))]) + b.table_gap  # the back's skin
        curve = np.float32(5e-4)  # the top rises 20 mm at 200 mm off-centre
        top = np.float32(back) - curve * c.x * c.x
        depth = c.y - top
        width = np.abs(c.x) < np.float32(230.0)
        air = c.tissue == _T["air"]
        for start, end in ((0.0, 5.0), (38.0, 43.0)):
            c.tissue[air & width & (depth >= start) & (depth < end)] = _T["table"]

    def _legs(self, offset: float, z_axis: np.ndarray) -> np.ndarray:
        """Both thighs (mm offset outside the muscle boundary), below the crotch."""
        b, c = self.b, self.c
        inside = np.zeros(c.grid.shape, dtype=bool)
        slab = np.nonzero(z_axis / b.h < -290)[0]
        if slab.size == 0:
            return inside
        zr = z_axis[slab] / b.h
        a = np.interp(zr, [-900, -650, -450, -300], [48, 52, 70, 80]) * b.w + offset
        bb = np.interp(zr, [-900, -650, -450, -300], [50, 55, 68, 75]) * b.d + offset
        a, bb = (v[:, None, None].astype(np.float32) for v in (a, bb))
        x, y = c.x[slab[0]:slab[-1] + 1], c.y[slab[0]:slab[-1] + 1]
        yc = np.float32(8.0 * b.d)
        legs = inside[slab[0]:slab[-1] + 1]
        for side in (-1.0, 1.0):
            legs |= (((x - np.float32(side * 95.0 * b.w)) / a) ** 2 + ((y - yc) / bb) ** 2) <= 1.0
        return inside

    def _below_apex(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Under the two lung apices (rounded domes above the first ribs)."""
        b = self.b
        r2 = (np.abs(x) - 50.0 * b.w) ** 2 + ((y - 30.0 * b.d) * 1.3) ** 2
        return z < b.z_apex - r2 / 160.0

    def _lung_vessels(self, lung: np.ndarray) -> None:
        f1, f2 = self.field("sheets", 9.0), self.field("texture", 4.0)
        vessels = lung & (np.abs(f1) < 0.12) & (np.abs(f2) < 0.35)
        self.c.tissue[vessels] = _T["right_heart_blood"]

    # --------------------------------------------------------------------------- thorax
    def thorax(self) -> None:
        """Fat of the superior mediastinum, between the lungs above the heart."""
        b = self.b
        z0 = b.vertebrae["T6"][0]
        y_front = float(b.wall_ellipse(np.array([z0]))[2][0] - b.wall_ellipse(np.array([z0]))[1][0])

        def superior(v: _View) -> np.ndarray:  # a wedge from the sternum to the trachea
            y_anterior = y_front + b.wall + 4.0
            y_back = b.y_spine(v.z) - 45.0 * b.d
            depth = np.clip((v.y - y_anterior) / (y_back - y_anterior), 0.0, 1.0)
            return (np.abs(v.x - 3.0) < (8.0 + 18.0 * depth) * b.w) & (v.y < y_back) & \
                (v.y > y_anterior)
        lo = [-40, -160, z0]
        hi = [40, 120, b.z_apex + 10]
        self.c.paint(_box(lo, hi, superior), "fat", within=("lung",))

    # --------------------------------------------------------------------------- bowel
    def bowel(self) -> None:
        """Colon along its frame, then small-bowel loops as random walks through the free space."""
        b, c, rng = self.b, self.c, self.rng
        up = dict(upper_abdomen=True)
        colon = [b.p(-90, 0, -130), b.p(-102, 15, -60), b.p(-98, -5, 5, **up),
                 b.p(-60, -55, 0, **up), b.p(0, -72, -25), b.p(55, -55, 15, **up),
                 b.p(95, 15, 50, **up), b.p(105, 35, 0), b.p(102, 30, -100),
                 b.p(70, 0, -150), b.p(35, 20, -185), b.p(5, 55, -215), b.p(0, 62, -265),
                 b.p(0, 50, -305)]
        radius = rng.uniform(17, 26) * np.ones(len(colon))
        radius[-3:] *= 0.8
        c.paint(_tube(colon, radius + 2.5), "bowel_wall", within=("fat",))
        c.paint(_tube(colon, radius), "bowel_content", within=("bowel_wall",))
        texture = self.field("texture", 4.0)
        bubbles = rng.uniform(0.6, 1.6)
        y_gas = b.p(0, -50, 0)[1] + rng.uniform(-20, 40)
        lo, hi = np.min(colon, axis=0) - 30, np.max(colon, axis=0) + 30
        c.paint(_box(lo, hi, lambda v: (texture[v.box] > bubbles) | (v.y < y_gas)), "gas",
                within=("bowel_content",))

        centre = b.p(-5, -30, -95)
        semi = np.array([85 * b.w, 55 * b.d, 80 * b.h])
        for _ in range(int(rng.integers(14, 20))):
            path = _random_walk(rng, centre + rng.uniform(-0.8, 0.8, 3) * semi, centre, semi,
                                steps=int(rng.integers(30, 50)), step_mm=10.0)
            r = rng.uniform(9.0, 14.0)
            c.paint(_tube(path, r + 2.5, 10.0), "bowel_wall", within=("fat",))
            c.paint(_tube(path, r, 10.0), "bowel_content", within=("bowel_wall",))
            if rng.random() < 0.2:
                c.paint(_tube(path[: len(path) // 3], r, 10.0), "gas", within=("bowel_content",))

    # --------------------------------------------------------------------------- solid organs
    def _under_diaphragm(self, v: _View) -> np.ndarray:
        return v.z < self.z_dia[v.box] - 5.0

    def liver(self) -> None:
        """Right lobe, left lobe and caudate lobe, with vessels and occasional lesions."""
        b, c = self.b, self.c
        up = dict(upper_abdomen=True)
        lobes = [
            _ellipsoid(b.p(-72, -5, 55, 6, **up), b.scale([74, 88, 86])),
            _ellipsoid(b.p(15, -48, 78, 6, **up), b.scale([60, 38, 34], 0.2)),
            _ellipsoid(b.p(-15, 22, 62, 4, **up), b.scale([18, 22, 30])),
        ]
        space = ("fat", "bowel_wall", "bowel_content", "gas")
        tip = b.p(-130, 0, -30, upper_abdomen=True)
        slope = self.rng.uniform(0.45, 0.75)

        bend = self.rng.uniform(0.002, 0.006)

        def wedge(v: _View) -> np.ndarray:
            """Above the visceral surface, which rises to the left and sags posteriorly."""
            floor = tip[2] + slope * (v.x - tip[0]) - bend * (v.y - tip[1]) ** 2
            return self._under_diaphragm(v) & (v.z > floor)
        for lobe in lobes:
            c.paint(lobe.where(wedge), "liver", "liver", within=space)
        box = c.box(np.array([-250, -250, -150.0]), np.array([150, 150, 250.0]))
        if box is not None:
            liver = c.tissue[box] == _T["liver"]
            f1 = self.field("sheets", 9.0)[box]
            f2 = self.field("texture", 4.0)[box]
            c.tissue[box][liver & (np.abs(f1) < 0.15) & (np.abs(f2) < 0.45)] = _T["liver_vessel"]
        for _ in range(self.rng.poisson(1.5) if self.rng.random() < 0.35 else 0):
            centre = b.p(-70, -10, 50, 30, **up)
            c.paint(_ellipsoid(centre, [self.rng.uniform(5, 20)] * 3), "liver_lesion", "liver",
                    within=("liver", "liver_vessel"))

    def gallbladder(self) -> None:
        b = self.b
        axes = _frame(_unit([0.15, -0.45, -0.88]) + self.rng.normal(0, 0.1, 3), [1, 0, 0])
        size = self.rng.uniform(0.75, 1.25)
        centre = b.p(-45, -50, 10, 6, upper_abdomen=True)
        semi = np.array([38, 15, 15]) * size
        self.c.paint(_ellipsoid(centre, semi, axes), "bowel_wall", "gallbladder",
                     within=_ABDOMINAL_SPACE)
        self.c.paint(_ellipsoid(centre, semi - 2.0, axes), "bile", "gallbladder",
                     within=("bowel_wall",))

    def spleen(self) -> None:
        """A crescent against the left posterolateral ribs (not an ellipsoid): a shell under the
        inner abdominal wall whose thickness (mm) peaks mid-height and mid-arc, with a concave
        visceral surface facing the stomach and the left kidney. Adult volumes 0.1-0.5 L
        (tested), spanning about T10-L1 under the left diaphragm dome."""
        b, rng = self.b, self.rng
        thickness = rng.uniform(35.0, 65.0) * b.w  # mm, at the thickest point
        height = rng.uniform(85.0, 135.0) * b.h  # cranio-caudal extent, mm
        z_mid = b.z_dome_left - 0.48 * height + rng.normal(0, 6)
        z_low, z_high = z_mid - height / 2, z_mid + height / 2
        # arc of the crescent, angles in the axial plane from the patient's left (+x) towards
        # posterior (+y), in degrees
        arc_low = rng.uniform(-35.0, -10.0)
        arc_high = rng.uniform(55.0, 80.0)
        twist = rng.uniform(-0.12, 0.12)  # degrees of arc per mm of height (the long axis tilt)
        gap = rng.uniform(1.0, 6.0)  # mm between the inner wall and the splenic capsule

        def crescent(v: _View) -> np.ndarray:
            a, bb, yc = b.wall_ellipse(v.z)
            cav = np.maximum(b.cavity_scale(v.z), 1e-3)
            semi_x, semi_y = (a - b.wall) * cav, (bb - b.wall) * cav
            dy = v.y - yc
            rho = np.sqrt(v.x * v.x + dy * dy) + 1e-3
            r = np.sqrt((v.x / semi_x) ** 2 + (dy / semi_y) ** 2)
            depth = rho * (1.0 / np.maximum(r, 1e-3) - 1.0) - gap  # mm inside the inner wall
            angle = np.degrees(np.arctan2(dy, v.x)) - twist * (v.z - z_mid)
            u = np.clip((v.z - z_low) / height, 0.0, 1.0)
            w = np.clip((angle - arc_low) / (arc_high - arc_low), 0.0, 1.0)
            profile = (np.clip(np.sin(np.pi * u), 0.0, None) ** 0.7
                       * np.clip(np.sin(np.pi * w), 0.0, None) ** 0.6)
            return (depth > 0) & (depth < thickness * profile) & (v.x > 0)
        lo = [0.0, -160.0 * b.d, z_low]
        hi = [260.0 * b.w, 200.0 * b.d, z_high]
        self.c.paint(_box(lo, hi, crescent).where(self._under_diaphragm), "spleen", "spleen",
                     within=_ABDOMINAL_SPACE)

    def stomach(self) -> None:
        """J-shaped tube from the fundus to the pylorus: wall, contents, and a gas cap."""
        b, c = self.b, self.c
        up = dict(upper_abdomen=True)
        path = [b.p(45, 25, 108, 5, **up), b.p(60, 5, 85, 5, **up), b.p(62, -30, 52, 5, **up),
                b.p(45, -55, 20, 5, **up), b.p(15, -65, 4, 5, **up), b.p(-15, -58, 10, 4, **up),
                b.p(-32, -45, 15, 3, **up)]
        radius = np.array([36, 38, 34, 28, 20, 14, 10]) * self.rng.uniform(0.6, 1.15)
        wall = [s.where(self._under_diaphragm) for s in _tube(path, radius + 4)]
        beside_spleen = tuple(t for t in _ABDOMINAL_SPACE if t != "spleen")  # it fills the gap
        c.paint(wall, "stomach_wall", "stomach", within=beside_spleen)
        c.paint(_tube(path, radius), "gastric_content", "stomach", within=("stomach_wall",))
        front = min(p[1] - r for p, r in zip(path, radius))
        y_level = front + self.rng.uniform(0.0, 0.35) * 2 * radius.mean()
        gas_cap = _box(np.array(path).min(0) - 45, np.array(path).max(0) + 45,
                       lambda v: v.y < y_level)
        c.paint(gas_cap, "gas", "stomach", within=("gastric_content",))

    def pancreas(self) -> None:
        b, c = self.b, self.c
        path = [b.p(-38, -5, -12, 4), b.p(-20, -22, 0, 3), b.p(5, -28, 8, 3),
                b.p(40, -12, 20, 4), b.p(68, 12, 30, 4), b.p(84, 26, 38, 4)]
        radius = np.array([18, 14, 12, 11, 10, 8]) * self.rng.uniform(0.8, 1.2)
        c.paint(_tube(path, radius, 6.0), "pancreas", "pancreas", within=_ABDOMINAL_SPACE)
        # fatty clefts between the lobules
        lo = np.array(path).min(0) - 30
        hi = np.array(path).max(0) + 30
        texture = self.field("texture", 4.0)
        level = self.rng.uniform(1.0, 2.0)
        c.paint(_box(lo, hi, lambda v: texture[v.box] > level), "fat", "none",
                within=("pancreas",))
        # duodenal C-loop around the head
        duodenum = [b.p(-32, -45, 15), b.p(-52, -25, 5), b.p(-55, -8, -28), b.p(-32, 0, -48),
                    b.p(0, -8, -48), b.p(22, -18, -35)]
        c.paint(_tube(duodenum, 13.0), "bowel_wall", within=("fat", "bowel_wall", "bowel_content"))
        c.paint(_tube(duodenum, 10.0), "bowel_content", within=("bowel_wall",))

    def kidneys(self) -> None:
        """Retroperitoneal kidneys beside the spine: perirenal fat, cortex, medulla, sinus."""
        b = self.b
        for side, organ, z in ((-1, "right_kidney", 0.0), (1, "left_kidney", 18.0)):
            centre = b.p(62 * side, 0, z, 5, upper_abdomen=False)
            centre[1] = b.y_spine(centre[2]) + 12.0 * b.d + self.rng.normal(0, 4)
            centre[2] += 0.5 * b.breath
            long_axis = _unit([-0.25 * side, 0.3, 1.0]) + self.rng.normal(0, 0.08, 3)
            hilum = np.array([-0.75 * side, -0.65, 0.0])
            axes = _frame(long_axis, hilum)
            semi = b.scale([55, 27, 25], 0.12)
            self.c.paint(_ellipsoid(centre, semi + 10.0, axes), "fat",
                         within=("fat", "bowel_wall", "bowel_content", "gas"))
            self.c.paint(_ellipsoid(centre, semi, axes), "kidney_cortex", organ)
            self.c.paint(_ellipsoid(centre, semi * [0.8, 0.62, 0.62], axes), "kidney_medulla",
                         organ)
            sinus = centre + axes[:, 1] * semi[1] * 0.75
            self.c.paint(_ellipsoid(sinus, semi * [0.45, 0.45, 0.4], axes), "fat")
            self.c.paint(_ellipsoid(sinus - axes[:, 1] * 4, semi * [0.3, 0.22, 0.22], axes),
                         "urine")

    def pelvic_organs(self) -> None:
        b = self.b
        fill = self.rng.uniform(0.4, 1.3)
        bladder = _ellipsoid(b.p(0, -50, -245 + 15 * fill, 5), b.scale([45, 35, 32]) * fill)
        self.c.paint(bladder, "urine", within=_ABDOMINAL_SPACE)
        self.c.paint(_ellipsoid(b.p(0, 5, -285, 4), b.scale([22, 20, 22])), "soft_tissue",
                     within=_ABDOMINAL_SPACE)

    # --------------------------------------------------------------------------- vessels
    def aorta_path(self) -> tuple[list[np.ndarray], list[float]]:
        """Descending and abdominal aorta down to the bifurcation (points, radii in mm)."""
        b = self.b
        points, radii = [], []
        for z, x, dy, r in ((230, 24, -18, 11.5), (160, 22, -20, 11), (110, 16, -24, 10.5),
                            (40, 12, -28, 10), (-40, 10, -30, 9), (-85, 6, -28, 8)):
            zz = z * b.h
            points.append(np.array([x * b.w, b.y_spine(zz) + dy * b.d, zz]))
            radii.append(r)
        return points, radii

    def ivc_path(self) -> list[np.ndarray]:
        b = self.b
        points = []
        for z, x, dy in ((-90, -16, -20), (-30, -22, -25), (30, -24, -28), (75, -28, -38)):
            zz = z * b.h
            points.append(np.array([x * b.w, b.y_spine(zz) + dy * b.d, zz]))
        return points

    def abdominal_vessels(self) -> None:
        """Aorta and IVC with their main branches, portal and splenic veins, iliac vessels."""
        b, c = self.b, self.c
        aorta, radii = self.aorta_path()
        c.paint(_tube(aorta, np.array(radii) * self.aorta_scale), "arterial_blood", "aorta")
        ivc = self.ivc_path()
        c.paint(_tube(ivc, self.ivc_radius), "caval_blood", "inferior_vena_cava")
        ys = lambda z: float(b.y_spine(z * b.h))  # noqa: E731 - tiny local helper
        for side in (-1, 1):
            artery = [aorta[-1], b.p(40 * side, 0, -150), b.p(70 * side, -25, -225),
                      b.p(85 * side, -40, -300), b.p(80 * side, -25, -480),
                      b.p(68 * side, 0, -700)]
            vein = [ivc[0], b.p(45 * side, 10, -155), b.p(72 * side, -12, -228),
                    b.p(90 * side, -28, -300), b.p(88 * side, -15, -480),
                    b.p(76 * side, 10, -700)]
            c.paint(_tube(vein, 7.0), "caval_blood")
            c.paint(_tube(artery, 5.5), "arterial_blood")
        # renal veins and arteries
        for side, z in ((-1, 2.0), (1, 18.0)):
            hilum = b.p(40 * side, 0, z)
            hilum[1] = ys(z) + 0 * b.d
            c.paint(_tube([np.array([-20 * b.w, ys(z) - 28 * b.d, z * b.h]), hilum], 5.5),
                    "caval_blood")
            c.paint(_tube([np.array([10 * b.w, ys(z) - 30 * b.d, z * b.h + 8]), hilum], 3.0),
                    "arterial_blood")
        # left renal vein passes between the aorta and the SMA
        c.paint(_tube([np.array([-20 * b.w, ys(14) - 28 * b.d, 14 * b.h]),
                       np.array([10 * b.w, ys(14) - 46 * b.d, 14 * b.h]),
                       np.array([45 * b.w, ys(16) + 0 * b.d, 16 * b.h])], 5.0), "caval_blood")
        # coeliac trunk and superior mesenteric artery
        c.paint(_tube([np.array([12 * b.w, ys(32) - 36 * b.d, 32 * b.h]), b.p(10, -12, 36)], 3.5),
                "arterial_blood")
        c.paint(_tube([np.array([12 * b.w, ys(18) - 36 * b.d, 18 * b.h]), b.p(6, -40, 5),
                       b.p(4, -45, -80)], 4.0), "arterial_blood")
        # splenic vein -> portal confluence -> portal vein into the liver hilum; SMV
        up = dict(upper_abdomen=True)
        portal = [b.p(80, 32, 42, **up), b.p(40, 0, 22), b.p(5, -12, 8), b.p(-15, -15, 4),
                  b.p(-35, -12, 30, **up), b.p(-55, -5, 48, **up)]
        c.paint(_tube(portal, [5, 5, 6, 8, 8, 7]), "portal_blood")
        c.paint(_tube([b.p(-12, -30, -80), b.p(-14, -25, -20), b.p(-15, -15, 4)], 5.5),
                "portal_blood")

    # --------------------------------------------------------------------------- heart
    def heart(self) -> None:
        """Four chambers, ventricular myocardium, aorta and pulmonary arteries (patient mm)."""
        b, c, rng = self.b, self.c, self.rng

        def paint(shape: _Shape | list[_Shape], tissue: str, organ: str = "none",
                  within: Sequence[str] | None = None) -> None:
            """Paint above the diaphragm only: the heart's inferior surface rests on it."""
            parts = [shape] if isinstance(shape, _Shape) else shape
            c.paint([part.where(lambda v: v.z > self.z_dia[v.box] + 1.0) for part in parts],
                    tissue, organ, within)
        base = b.p(18, -12, 142, 5)
        base[2] += 0.4 * b.breath
        self.heart_centre = base
        u = _unit(_unit([0.55, -0.55, -0.62]) + rng.normal(0, 0.08, 3))
        axes = _frame(u, [-0.6, -0.7, -0.2])  # long axis, towards the RV, third axis
        e_rv = axes[:, 1]
        size = rng.uniform(0.85, 1.2)
        length = 80.0 * size
        r_lv = 23.0 * rng.uniform(0.85, 1.2) * size
        t_lv = 10.0 * rng.uniform(0.8, 1.25)

        def off(x: float, y: float, z: float) -> np.ndarray:
            return base + np.array([x, y, z]) * size

        def beyond_base(margin: float) -> Callable[[_View], np.ndarray]:
            def test(v: _View) -> np.ndarray:
                return ((v.x - base[0]) * u[0] + (v.y - base[1]) * u[1]
                        + (v.z - base[2]) * u[2]) >= -margin
            return test

        lv_centre = base + u * length / 2
        rv_centre = base + u * length * 0.38 + e_rv * (r_lv + t_lv + 4)
        rv_semi = np.array([length * 0.42, (r_lv + t_lv) * 0.85, r_lv + t_lv + 8])
        heart_outline = _ellipsoid(base + u * length * 0.45 + e_rv * 12,
                                   [length * 0.58, r_lv + t_lv + 20, r_lv + t_lv + 8], axes)
        paint(heart_outline, "fat", within=("lung", "fat", "muscle"))

        # intrathoracic IVC, from the liver up into the right atrium (which is painted over it)
        ivc = self.ivc_path()
        c.paint(_tube([ivc[-1], off(-40, 12, -25), off(-46, 8, -5)], self.ivc_radius),
                "caval_blood", "inferior_vena_cava")
        la = _ellipsoid(off(-2, 24, 14), np.array([30, 15, 22]) * size)
        ra = _ellipsoid(off(-46, 8, 6), np.array([24, 24, 30]) * size)
        for shape, organ, blood in ((la, "left_atrium", "arterial_blood"),
                                    (ra, "right_atrium", "right_heart_blood")):
            paint(_ellipsoid((shape.lo + shape.hi) / 2, (shape.hi - shape.lo) / 2 + 2.5),
                    "myocardium")
            paint(shape, blood, organ)
        for side in (-1, 1):
            for dz in (-10, 10):
                paint(_tube([off(18 * side, 30, 14 + dz), off(48 * side, 42, 14 + dz * 1.4)],
                              6.5), "arterial_blood", within=("lung", "fat", "muscle"))
        paint(_tube([off(-2, 30, 10), base + u * 8], 14 * size), "arterial_blood", "left_atrium")
        paint(_tube([off(-46, 10, 30), off(-38, 16, 110)], 9.0), "right_heart_blood")
        paint(_tube([off(-46, 8, 6), rv_centre - u * 10], 13 * size), "right_heart_blood",
                "right_atrium")

        paint(_ellipsoid(rv_centre, rv_semi + 4, axes).where(beyond_base(8)), "myocardium",
                "myocardium")
        paint(_ellipsoid(rv_centre, rv_semi, axes).where(beyond_base(8)), "right_heart_blood",
                "right_ventricle")
        pulmonary_valve = off(10, -34, 30)
        rvot = [rv_centre - u * 5 + e_rv * 5, pulmonary_valve]
        paint(_tube(rvot, 15 * size), "myocardium", "myocardium",
                within=("lung", "fat", "muscle", "myocardium", "arterial_blood"))
        paint(_tube(rvot, 12 * size), "right_heart_blood", "right_ventricle")

        paint(_ellipsoid(lv_centre, [length / 2 + 8, r_lv + t_lv, r_lv + t_lv], axes)
                .where(beyond_base(0)), "myocardium", "myocardium")
        paint(_ellipsoid(lv_centre, [length / 2, r_lv, r_lv], axes).where(beyond_base(0)),
                "arterial_blood", "left_ventricle")
        aortic_valve = off(-6, -6, 10)
        paint(_tube([base + u * 15, aortic_valve], 11 * size), "arterial_blood",
                "left_ventricle")

        descending, radii = self.aorta_path()
        ascending = [aortic_valve, off(-16, -14, 40), off(-14, -8, 72), off(-4, 14, 95),
                     off(14, 38, 92), off(20, 52, 70)]
        arch = ascending + [p for p in descending if p[2] < ascending[-1][2] - 20]
        arch_r = [14, 15, 14, 13, 12, 11.5] + [r for p, r in zip(descending, radii)
                                              if p[2] < ascending[-1][2] - 20]
        paint(_tube(arch, np.array(arch_r) * self.aorta_scale * size ** 0.5), "arterial_blood",
              "aorta")
        bifurcation = off(8, 2, 64)
        paint(_tube([pulmonary_valve, off(14, -18, 52), bifurcation], 13 * size),
                "right_heart_blood", "pulmonary_artery")
        paint(_tube([bifurcation, off(38, 18, 66), off(62, 30, 58)], [10, 9, 8]),
                "right_heart_blood", "pulmonary_artery")
        paint(_tube([bifurcation, off(-20, 14, 62), off(-58, 18, 55)], [10, 9, 8]),
                "right_heart_blood", "pulmonary_artery")
        # head and arm vessels from the arch
        for dx in (-20, 0, 18):
            top = off(dx * 1.4, 20, 200)
            paint(_tube([off(dx * 0.6, 10, 96), off(dx, 15, 130), top], 5.0), "arterial_blood")

    def mediastinum(self) -> None:
        """Trachea and main bronchi (air), oesophagus."""
        b, c = self.b, self.c
        ys = lambda z: float(b.y_spine(z))  # noqa: E731
        carina = np.array([2 * b.w, ys(250 * b.h) - 22 * b.d, 250 * b.h])
        trachea = [np.array([0, ys(z * b.h) - 30 * b.d, z * b.h]) for z in (520, 420, 330)]
        airway = trachea + [carina]
        c.paint(_tube(airway, 10.0), "soft_tissue")
        c.paint(_tube(airway, 8.0), "gas")
        for side, dz in ((-1, -15), (1, -25)):
            bronchus = [carina, carina + np.array([40 * side * b.w, 12 * b.d, dz * b.h])]
            c.paint(_tube(bronchus, 7.0), "soft_tissue", within=("lung", "fat"))
            c.paint(_tube(bronchus, 5.5), "gas")
        oesophagus = [np.array([x * b.w, ys(z * b.h) + dy * b.d, z * b.h]) for z, x, dy in
                      ((520, -2, -16), (300, 2, -18), (180, 10, -22), (110, 25, -35))]
        oesophagus.append(b.p(40, 15, 100, upper_abdomen=True))
        c.paint(_tube(oesophagus, 8.0), "soft_tissue", within=("lung", "fat", "muscle"))

    def neck(self) -> None:
        """Thyroid, carotid arteries and jugular veins."""
        b, c = self.b, self.c
        z0 = b.vertebrae["C6"][1]
        y_tr = float(b.y_spine(z0)) - 30 * b.d
        for side in (-1, 1):
            c.paint(_ellipsoid([18 * side * b.w, y_tr - 2, z0], [9, 11, 22]), "thyroid")
            c.paint(_tube([np.array([28 * side * b.w, y_tr + 8, z]) for z in
                           (b.z_apex - 60, b.z_skull_base + 20)], 4.0), "arterial_blood")
            c.paint(_tube([np.array([40 * side * b.w, y_tr + 10, z]) for z in
                           (b.z_apex - 60, b.z_skull_base + 20)], 6.5), "caval_blood")

    # --------------------------------------------------------------------------- muscles & bones
    def muscles(self) -> None:
        """Psoas, growing down the lumbar spine into the iliopsoas (the back muscles are wall)."""
        b, c = self.b, self.c
        for side in (-1, 1):
            psoas = []
            for z, x, dy in ((55, 22, 2), (0, 30, 0), (-80, 45, -5), (-170, 62, -45),
                             (-260, 75, -50), (-330, 95, -15)):
                psoas.append(np.array([x * side * b.w, b.y_spine(z * b.h) + dy * b.d, z * b.h]))
            c.paint(_tube(psoas, np.array([6, 12, 22, 22, 17, 12]) * self.rng.uniform(0.8, 1.2)),
                    "muscle")

    def spine(self) -> None:
        """Vertebral bodies, discs, posterior arches, spinal canal, and the sacrum."""
        b, c = self.b, self.c
        names = list(b.vertebrae)
        for n, name in enumerate(names):
            bottom, top, height = b.vertebrae[name]
            zc = (bottom + top) / 2
            yc = float(b.y_spine(zc))
            region = name[0]
            rx, ry = {"C": (10, 8), "T": (15, 13), "L": (21, 16)}[region]
            rx, ry = rx * b.w, ry * b.d
            c.paint(self._cylinder([0, yc], [rx, ry], bottom, top), "bone_cortical")
            c.paint(self._cylinder([0, yc], [rx - 2, ry - 2], bottom + 1.5, top - 1.5),
                    "bone_marrow")
            if n + 1 < len(names):
                below_top = b.vertebrae[names[n + 1]][1]
                c.paint(self._cylinder([0, yc], [rx, ry], below_top, bottom), "disc")
            canal_y = yc + ry + 10 * b.d
            arch = self._cylinder([0, canal_y], [rx * 0.75, 14 * b.d], bottom, top)
            c.paint(arch, "bone_cortical")
            c.paint(self._cylinder([0, canal_y], [8 * b.w, 8 * b.d], bottom - 8, top + 8), "csf")
            spinous = _capsule(np.array([0, canal_y + 12, zc]),
                               np.array([0, canal_y + 38 * b.d, zc - 12]), 4.0, 3.5)
            c.paint(spinous, "bone_cortical")
            span = {"C": 28, "T": 32, "L": 42}[region] * b.w
            c.paint(_capsule(np.array([-span, canal_y, zc]), np.array([span, canal_y, zc]),
                             4.0, 4.0), "bone_cortical", within=("muscle", "fat", "bone_cortical"))
        # sacrum: flattened ellipsoids along its curve
        for z, width, thick in ((-140, 50, 18), (-165, 45, 16), (-190, 36, 13), (-215, 26, 10),
                                (-240, 15, 8)):
            zz = z * b.h
            centre = [0, float(b.y_spine(zz)), zz]
            semi = [width * b.w, thick * b.d, 16]
            c.paint(_ellipsoid(centre, semi), "bone_cortical")
            c.paint(_ellipsoid(centre, np.array(semi) - 3), "bone_marrow")

    def _cylinder(self, centre_xy: Sequence[float], semi_xy: Sequence[float], z0: float,
                  z1: float) -> _Shape:
        cx, cy = centre_xy
        ax, ay = semi_xy

        def inside(v: _View) -> np.ndarray:
            return ((((v.x - cx) / ax) ** 2 + ((v.y - cy) / ay) ** 2) <= 1.0) & \
                (v.z >= z0) & (v.z <= z1)
        return _box([cx - ax, cy - ay, z0], [cx + ax, cy + ay, z1], inside)

    def ribs_and_shoulders(self) -> None:
        """Twelve pairs of ribs with costal cartilages, sternum, clavicles and scapulae."""
        b, c = self.b, self.c
        drops = [25, 40, 60, 70, 80, 85, 90, 90, 80, 60, 25, 10]
        ends = [165, 165, 165, 165, 160, 158, 155, 150, 145, 140, 110, 80]
        cartilage_from = [140, 140, 138, 135, 130, 125, 120, 120, 118, 115, 999, 999]
        for r in range(12):
            bottom, top, _ = b.vertebrae[f"T{r + 1}"]
            z_head = (bottom + top) / 2
            for side in (-1, 1):
                theta = np.radians(np.linspace(20, ends[r], 9))
                z_rib = z_head + 8 - (drops[r] * b.h) * ((theta - theta[0]) /
                                                         (theta[-1] - theta[0])) ** 1.2
                a, bb, yc = b.wall_ellipse(z_rib)
                inset = self.b.wall * 0.5 + 4
                x = side * (a - inset) * np.sin(theta)
                y = yc + (bb - inset) * np.cos(theta)
                points = [np.array([18 * side * b.w, float(b.y_spine(z_head)) + 6, z_head])]
                points += [np.array(p) for p in zip(x, y, z_rib)]
                radius = 4.0 if r in (0, 10, 11) else 5.0
                bone = [p for p, t in zip(points, [0] + list(np.degrees(theta)))
                        if t <= cartilage_from[r]]
                cart = [p for p, t in zip(points, [0] + list(np.degrees(theta)))
                        if t >= cartilage_from[r] - 15]
                c.paint(_tube(bone, radius, 12.0), "bone_cortical")
                c.paint(_tube(bone, radius - 2.5, 12.0), "bone_marrow")
                if len(cart) > 1 and r < 10:
                    if r < 7:
                        cart.append(np.array([12 * side * b.w, cart[-1][1], cart[-1][2]]))
                    c.paint(_tube(cart, radius, 12.0), "cartilage")
        # sternum
        a, bb, yc = b.wall_ellipse(np.array([300.0, 120.0]) * b.h)
        sternum = [np.array([0.0, yc[n] - bb[n] + b.wall * 0.6, z])
                   for n, z in enumerate((300.0 * b.h, 120.0 * b.h))]
        for t in np.linspace(0, 1, 8):
            p = sternum[0] * (1 - t) + sternum[1] * t
            c.paint(_ellipsoid(p, [16 * b.w, 7, 16]), "bone_cortical")
            c.paint(_ellipsoid(p, [13 * b.w, 4.5, 16]), "bone_marrow")
        # clavicles and scapulae
        z_cl = b.vertebrae["T1"][1] + 5
        for side in (-1, 1):
            clavicle = [np.array([15 * side * b.w, sternum[0][1] + 5, z_cl]),
                        np.array([70 * side * b.w, sternum[0][1] + 10, z_cl + 8]),
                        np.array([125 * side * b.w, -10 * b.d, z_cl + 12])]
            c.paint(_tube(clavicle, 7.0), "bone_cortical")
            c.paint(_tube(clavicle, 3.5), "bone_marrow")
            angle = np.radians(25 * side)
            axes = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                             [0, 0, 1]])
            a, bb, yc = b.wall_ellipse(np.array([240.0 * b.h]))
            centre = [95 * side * b.w, float(yc[0] + bb[0]) - 22, 240 * b.h]
            c.paint(_ellipsoid(centre, [45 * b.w, 4.5, 70 * b.h], axes), "bone_cortical",
                    within=("muscle", "fat"))

    def pelvis_and_legs_bones(self) -> None:
        """Iliac wings, pubic and ischial rami, femoral heads and shafts."""
        b, c = self.b, self.c
        centre = b.p(0, 25, -150)
        semi = np.array([135 * b.w, 100 * b.d, 105 * b.h])

        def wing(v: _View, inner: float, outer: float) -> np.ndarray:
            r = (((v.x - centre[0]) / semi[0]) ** 2 + ((v.y - centre[1]) / semi[1]) ** 2
                 + ((v.z - centre[2]) / semi[2]) ** 2)
            y_front = (-40.0 - 0.25 * (v.z / b.h + 85.0)) * b.d  # -40 mm at the crest, 0 low
            return ((r <= outer) & (r >= inner) & (v.z <= -85 * b.h) & (v.z >= -230 * b.h)
                    & (np.abs(v.x) > 35 * b.w) & (v.y > y_front))
        lo, hi = centre - semi, centre + semi
        c.paint(_box(lo, hi, lambda v: wing(v, 0.8, 0.9)), "bone_cortical")
        c.paint(_box(lo, hi, lambda v: wing(v, 0.82, 0.88)), "bone_marrow")
        for side in (-1, 1):
            head = b.p(92 * side, -5, -245)
            c.paint(_ellipsoid(head, [31, 31, 31]), "bone_cortical", within=("muscle", "fat"))
            c.paint(_ellipsoid(head, [24, 24, 24]), "bone_cortical")
            c.paint(_ellipsoid(head, [20, 20, 20]), "bone_marrow")
            rami = [head, b.p(45 * side, -55, -262), b.p(8 * side, -62, -275)]
            ischium = [head, b.p(70 * side, 20, -285), b.p(55 * side, 25, -305),
                       b.p(30 * side, -40, -295), b.p(8 * side, -60, -280)]
            c.paint(_tube(rami, 8.0), "bone_cortical")
            c.paint(_tube(ischium, 9.0), "bone_cortical")
            c.paint(_tube(ischium, 5.0), "bone_marrow")
            shaft = [head, b.p(132 * side, 5, -268), b.p(125 * side, 5, -300),
                     b.p(100 * side, 5, -460), b.p(85 * side, 10, -700)]
            c.paint(_tube(shaft, [22, 18, 15, 14, 14]), "bone_cortical")
            c.paint(_tube(shaft[1:], [13, 9, 8, 8]), "bone_marrow")

    def head(self) -> None:
        """An egg-shaped head above the skull base: scalp, skull, CSF rim and brain."""
        b, c = self.b, self.c
        centre = np.array([0, 10 * b.d, b.z_skull_base + 70 * b.h])
        semi = np.array([72 * b.w, 92 * b.d, 100 * b.h])
        c.paint(_ellipsoid(centre, semi + 7), "fat")
        c.paint(_ellipsoid(centre, semi), "bone_cortical")
        c.paint(_ellipsoid(centre, semi - 2.5), "bone_marrow")
        c.paint(_ellipsoid(centre, semi - 5), "bone_cortical")
        c.paint(_ellipsoid(centre, semi - 7), "csf")
        c.paint(_ellipsoid(centre, semi - 10), "brain")


# ============================================================================ kinds: CT and heart

@dataclass
class _Scene:
    """What a kind's builder hands to image synthesis (maps on the render grid)."""

    acquisition: _Acquisition
    tissue: np.ndarray
    organ: np.ndarray
    region_of: Callable[[float], int] | None = None
    fractions: dict[str, np.ndarray] | None = None  # brain: tissue probabilities (partial volume)
    arms_down: bool = False


def _torso_scene(kind: str, rng_geometry: np.random.Generator, rng_anatomy: np.random.Generator,
                 shape: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None,
                 fov_cutoff: bool) -> _Scene:
    """Build one body, choose the kind's field of view on it, and paint it."""
    body = _Body(rng_anatomy)
    width = 2 * (150 * body.w + body.fat + body.arm_extent)
    crop = (0.7, 0.95) if fov_cutoff else (1.05, 1.3)
    if kind == "abdomen-ct":
        top = body.z_dome_right + rng_geometry.uniform(15, 120)  # some start in the chest
        bottom = body.z_iliac_crest - rng_geometry.uniform(0, 170)
        fov = ((width * crop[0], width * crop[1]),) * 2 + ((top - bottom, top - bottom),)
        centre = np.array([0.0, 0.0, (top + bottom) / 2])
        # in-plane pixels of at most ~3.2 mm, as scanners reconstruct (wide fields hold the arms)
        pixels = int(np.clip(np.ceil(width * crop[1] / 3.2 / 8) * 8, 128, 176))
        default_shape = (112, pixels, pixels)
        with_head = False
    elif kind == "body-ct":
        with_head = rng_geometry.random() < 0.3
        top = (body.z_skull_base + 200 * body.h) if with_head else \
            body.z_skull_base + rng_geometry.uniform(-40, 20)
        bottom = rng_geometry.uniform(-700, -560) * body.h
        fov = ((width * crop[0], width * crop[1]),) * 2 + ((top - bottom, top - bottom),)
        centre = np.array([0.0, 0.0, (top + bottom) / 2])
        default_shape = (192, 96, 96)
    else:  # heart-mr
        heart = body.p(18, -12, 142) + np.array([15.0, -15.0, -15.0 + 0.4 * body.breath])
        fov_mm = (130, 190) if fov_cutoff else (160, 220)
        fov = (fov_mm, fov_mm, fov_mm)
        centre = heart + rng_geometry.normal(0, 8, 3)
        default_shape = (112, 112, 112)
        with_head = False
    if fov_cutoff:
        centre = centre + rng_geometry.uniform(-0.15, 0.15, 3) * np.array(
            [fov[0][1], fov[1][1], fov[2][1]])
    acquisition = _choose_acquisition(rng_geometry, default_shape, fov, centre, shape, spacing)
    render = acquisition.grid.subdivided(acquisition.subslices)
    amplitude = rng_anatomy.uniform(2.0, 7.0)
    deformation = _displacement(rng_anatomy, render, amplitude, 70.0, (420.0, 420.0, 1200.0))
    textures = np.random.default_rng(rng_anatomy.integers(2 ** 63))  # grid-sized draws
    canvas = _Canvas(render, deformation)
    _TorsoPainter(body, canvas, rng_anatomy, textures, with_head).paint_all()
    return _Scene(acquisition, canvas.tissue, canvas.organ, body.region_of,
                  arms_down=body.arms_down)


# ============================================================================ kind: brain MR

def _nilearn_data_folder() -> Path:
    """The folder of data files bundled with the installed nilearn package (no import needed)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("brain-mr phantoms need the ICBM152 maps in nilearn: pip install nilearn")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def _icbm152() -> dict[str, object]:
    """The ICBM152 2009 grey/white-matter probability maps and head layers bundled in nilearn.

    Read straight from the files nilearn ships (no download): GM and WM probabilities at 1 mm in
    [0, 1], a brain mask, and an extra-cerebral layer map (subarachnoid CSF, skull, scalp) at 2 mm.
    """
    import SimpleITK as sitk

    data = _nilearn_data_folder()
    files = {key: data / f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"
             for key in ("gm", "wm", "t1")}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise InputError(f"nilearn lacks its bundled ICBM152 maps ({missing[0]}); "
                         "pip install --force-reinstall nilearn")
    images = {key: sitk.ReadImage(str(path)) for key, path in files.items()}
    gm = sitk.GetArrayFromImage(images["gm"]).astype(np.float32) / 255.0
    wm = sitk.GetArrayFromImage(images["wm"]).astype(np.float32) / 255.0
    mask = sitk.GetArrayFromImage(images["t1"]) > 0
    reference = images["gm"]
    return {
        "gm": gm, "wm": wm, "csf": np.clip(mask - gm - wm, 0.0, 1.0).astype(np.float32),
        "layers": _head_layers(mask), "origin": np.array(reference.GetOrigin()),
        "spacing": np.array(reference.GetSpacing()),
        "direction": np.array(reference.GetDirection()).reshape(3, 3),
    }


_HEAD_LAYERS = (  # (outer distance from the brain surface in mm, tissue), inside out
    (3.0, "csf"), (5.0, "bone_cortical"), (9.0, "bone_marrow"), (11.0, "bone_cortical"),
    (16.0, "fat"), (18.0, "muscle"))


def _head_layers(mask: np.ndarray) -> np.ndarray:
    """Tissue map at 2 mm of the layers around the brain (padded by 12 voxels on every side)."""
    small = np.pad(mask[::2, ::2, ::2], 12)
    distance = ndi.distance_transform_edt(~small) * 2.0
    layers = np.zeros(small.shape, dtype=np.uint8)
    inner = 0.0
    for outer, tissue in _HEAD_LAYERS:
        layers[(distance > inner) & (distance <= outer)] = _T[tissue]
        inner = outer
    return layers


def _brain_scene(rng_geometry: np.random.Generator, rng_anatomy: np.random.Generator,
                 shape: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None,
                 fov_cutoff: bool) -> _Scene:
    """Deform the ICBM152 maps (affine + elastic + ventricle size) onto a random grid."""
    atlas = _icbm152()
    fov = ((200, 240), (200, 240), (170, 200)) if not fov_cutoff else \
        ((160, 200), (160, 200), (120, 160))
    centre = np.array([0.0, 18.0, 10.0]) + rng_geometry.normal(0, 3, 3)
    if fov_cutoff:
        centre += rng_geometry.uniform(-25, 25, 3)
    acquisition = _choose_acquisition(rng_geometry, (112, 128, 128), fov, centre, shape, spacing)
    render = acquisition.grid.subdivided(acquisition.subslices)
    points = _brain_sample_points(rng_anatomy, render, atlas)
    fractions = {name: ndi.map_coordinates(atlas[key], points, order=1, mode="constant",
                                           prefilter=False)
                 for name, key in (("csf", "csf"), ("grey_matter", "gm"), ("white_matter", "wm"))}
    layer_points = points / 2.0 + 12.0  # the layer map is at 2 mm, padded by 12 voxels
    layers = ndi.map_coordinates(atlas["layers"], layer_points, order=0, mode="constant",
                                 prefilter=False).astype(np.uint8)
    total = fractions["csf"] + fractions["grey_matter"] + fractions["white_matter"]
    stacked = np.stack([fractions["csf"], fractions["grey_matter"], fractions["white_matter"]])
    organ = np.where(total >= 0.5, np.argmax(stacked, axis=0) + _O["csf"], 0).astype(np.uint8)
    organ[(organ == 0) & (layers == _T["csf"])] = _O["csf"]
    tissue = layers.copy()
    names = ("csf", "grey_matter", "white_matter")
    intracranial = organ > 0
    tissue[intracranial] = np.array([_T[n] for n in names], dtype=np.uint8)[
        organ[intracranial] - _O["csf"]]
    return _Scene(acquisition, tissue, organ, None, fractions)


def _brain_sample_points(rng: np.random.Generator, grid: _Grid, atlas: dict) -> np.ndarray:
    """Atlas voxel indices (k, j, i; shape 3 x grid) sampled by each grid voxel of the case."""
    ax, ay, az = grid.axes()
    angles = np.radians(rng.uniform(-10, 10, 3))
    rotation = _rotation(angles)
    scales = rng.uniform(0.88, 1.12, 3)
    linear = np.linalg.inv(rotation * scales[None, :])  # patient -> atlas (about the centre)
    dx, dy, dz = _displacement(rng, grid, rng.uniform(1.0, 3.5), 30.0, (180.0, 180.0, 180.0))
    px = ax[None, None, :] + dx
    py = ay[None, :, None] + dy
    pz = az[:, None, None] + dz
    # ventricles: radial push around the lateral ventricles (mm)
    ventricle = np.array([0.0, 10.0, 15.0])
    push = rng.uniform(-2.0, 6.0)
    r2 = (px - ventricle[0]) ** 2 + (py - ventricle[1]) ** 2 + (pz - ventricle[2]) ** 2
    weight = (push / 25.0) * np.exp(-r2 / (2 * 25.0 ** 2))
    px, py, pz = px - weight * (px - ventricle[0]), py - weight * (py - ventricle[1]), \
        pz - weight * (pz - ventricle[2])
    q = [linear[a, 0] * px + linear[a, 1] * py + linear[a, 2] * pz for a in range(3)]
    # atlas physical -> continuous index, then (k, j, i) order
    inverse = np.linalg.inv(atlas["direction"] * atlas["spacing"][None, :])
    o = atlas["origin"]
    idx = [inverse[a, 0] * (q[0] - o[0]) + inverse[a, 1] * (q[1] - o[1])
           + inverse[a, 2] * (q[2] - o[2]) for a in range(3)]
    return np.stack([idx[2], idx[1], idx[0]]).astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (radians) about x, y and z, applied in that order."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# ============================================================================ image synthesis

def _tissue_means(kind: str, phase: str | None, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Mean intensity and texture SD per tissue id for the kind (CT: HU for the phase), and
    what was drawn beyond the table (CT: the HU a fatty liver lost, ``fatty_liver_hu``), for
    the phantom's ``info``."""
    means = np.zeros(len(_TISSUES), dtype=np.float32)
    texture = np.zeros(len(_TISSUES), dtype=np.float32)
    if MODALITIES[kind] == "CT":
        column = PHASES.index(phase)  # type: ignore[arg-type]
        for name, row in _CT_HU.items():
            lo, hi = row[column]
            means[_T[name]] = rng.uniform(lo, hi)
            texture[_T[name]] = row[3]
        if phase == "portal-venous":  # spleen within +-25 HU of the liver, darker or brighter
            means[_T["spleen"]] = means[_T["liver"]] + rng.uniform(-25, 20)
        # patients differ beyond one table: a fatty liver loses up to 40 HU (15 % of cases);
        # the stomach holds water, a meal or positive oral contrast
        fatty = float(rng.uniform(10.0, 40.0)) if rng.random() < 0.15 else 0.0
        means[_T["liver"]] -= fatty
        contents = ("water", "meal", "oral contrast")[int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
        means[_T["gastric_content"]] = {"water": rng.uniform(-5, 20), "meal": rng.uniform(20, 70),
                                        "oral contrast": rng.uniform(150, 350)}[contents]
        return means, texture, {"fatty_liver_hu": round(fatty, 1), "gastric_contents": contents}
    table = _BSSFP if kind == "heart-mr" else _T1W
    for name, ((lo, hi), sd) in table.items():
        means[_T[name]] = rng.uniform(lo, hi)
        texture[_T[name]] = sd
    return means, texture, {}


def _synthseg_means(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SynthSeg-style contrast: an independent random mean and texture per tissue, in [0, 1]."""
    means = rng.uniform(0.0, 1.0, len(_TISSUES)).astype(np.float32)
    texture = rng.uniform(0.0, 0.06, len(_TISSUES)).astype(np.float32)
    return means, texture


def _render_intensity(scene: _Scene, means: np.ndarray, texture_sd: np.ndarray,
                      rng: np.random.Generator) -> np.ndarray:
    """Intensity on the render grid: tissue means (or mixtures) plus a correlated texture."""
    render = scene.acquisition.grid.subdivided(scene.acquisition.subslices)
    image = means[scene.tissue]
    if scene.fractions is not None:
        mixed = sum(scene.fractions[name] * means[_T[name]] for name in scene.fractions)
        total = sum(scene.fractions.values())
        intracranial = scene.organ > 0
        image = np.where(intracranial, mixed + (1.0 - np.minimum(total, 1.0)) * means[_T["csf"]],
                         image).astype(np.float32)
    texture = _noise_field(rng, render, 3.0)
    image += texture_sd[scene.tissue] * texture
    return image


def _acquire(image: np.ndarray, acquisition: _Acquisition, rng: np.random.Generator,
             modality: str, synthseg: bool) -> np.ndarray:
    """Slice profile, in-plane PSF, downsampling (partial volume), bias field and noise."""
    n = acquisition.subslices
    dz = acquisition.grid.spacing[2] / n
    sigma_z = max(acquisition.thickness, dz) / np.sqrt(12.0) / dz
    psf_sigma = rng.uniform(0.3, 1.2) if synthseg else rng.uniform(0.4, 0.7)
    if n == 1:
        image = ndi.gaussian_filter(image, (sigma_z, psf_sigma, psf_sigma), truncate=3.0)
    else:
        image = ndi.gaussian_filter1d(image, sigma_z, axis=0, truncate=3.0)
        image = np.ascontiguousarray(image[n // 2::n])
        image = ndi.gaussian_filter(image, (0.0, psf_sigma, psf_sigma), truncate=3.0)
    grid = acquisition.grid
    if synthseg:
        return _synthseg_corruption(image, grid, rng)
    if modality == "CT":
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        noise = ndi.gaussian_filter(noise, (0.0, 0.7, 0.7))
        noise *= rng.uniform(6.0, 20.0) / max(float(noise.std()), 1e-6)
        return np.clip(image + noise, -1024.0, 3071.0)
    bias = np.exp(_bias_field(rng, grid, rng.uniform(0.1, 0.35)))
    gain = rng.uniform(300.0, 1500.0)
    signal = image * bias * gain
    sigma = rng.uniform(0.01, 0.04) * gain
    real = signal + rng.standard_normal(image.shape, dtype=np.float32) * sigma
    imaginary = rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return np.sqrt(real * real + imaginary * imaginary)  # Rician magnitude


def _bias_field(rng: np.random.Generator, grid: _Grid, sd: float) -> np.ndarray:
    """Smooth log-bias field (SD ``sd``) varying over ~ the whole field of view."""
    coarse = rng.standard_normal((4, 4, 4)).astype(np.float32) * sd
    return _upsample(coarse, grid.shape)


def _synthseg_corruption(image: np.ndarray, grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """Bias field, noise and gamma on a SynthSeg-style image, rescaled to [0, 1]."""
    image = image * np.exp(_bias_field(rng, grid, rng.uniform(0.0, 0.4)))
    image += rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(0.0, 0.05)
    low, high = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    return image ** np.float32(np.exp(rng.normal(0.0, 0.3)))


def _decimate(volume: np.ndarray, n: int) -> np.ndarray:
    """The centre sub-slice of each slice (labels are not averaged)."""
    return np.ascontiguousarray(volume[n // 2::n]) if n > 1 else volume


# ============================================================================ orientation

_AXIAL_CODES = tuple(a + b + c for a, b in (("L", "P"), ("L", "A"), ("R", "P"), ("R", "A"),
                                             ("P", "L"), ("A", "L"), ("P", "R"), ("A", "R"))
                     for c in "SI")


def _orientation_codes(axial_only: bool) -> tuple[str, ...]:
    if axial_only:
        return _AXIAL_CODES
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    codes = []
    for order in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for flips in np.ndindex(2, 2, 2):
            codes.append("".join(letters[a][flips[a]] for a in order))
    return tuple(codes)


def _reorient(volumes: list[Volume], rng: np.random.Generator, axial_only: bool,
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
        tilt = _rotation(angles)
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


# ============================================================================ public API

_DEFAULT_SHAPES = {"abdomen-ct": (112, 128, 128), "heart-mr": (112, 112, 112),
                   "brain-mr": (112, 128, 128), "body-ct": (192, 96, 96)}


def _check_arguments(kind: str, shape, spacing, contrast_phase) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}")
    if shape is not None and (len(shape) != 3 or min(shape) < 8 or max(shape) > 1024):
        raise InputError(f"phantom shape {tuple(shape)} must be 3 sizes (k, j, i) of 8-1024 "
                         "voxels")
    if spacing is not None and (len(spacing) != 3 or min(spacing) <= 0.05 or max(spacing) > 20):
        raise InputError(f"phantom spacing {tuple(spacing)} must be 3 values in (0.05, 20] mm")
    if contrast_phase is not None and contrast_phase not in PHASES:
        raise InputError(f"unknown contrast phase {contrast_phase!r}; choose one of "
                         f"{', '.join(PHASES)}")
    if contrast_phase is not None and MODALITIES[kind] != "CT":
        raise InputError(f"contrast phase applies to CT phantoms only, not {kind}")


def make_phantom(kind: str, seed: int, *, shape: tuple[int, int, int] | None = None,
                 spacing: tuple[float, float, float] | None = None,
                 random_orientation: bool = False, contrast_phase: str | None = None,
                 synthseg: bool = False, field_of_view_cutoff: bool = False) -> Phantom:
    """Generate one synthetic case, deterministically from ``seed``.

    Args:
        kind: one of :data:`KINDS`.
        seed: any non-negative integer; equal arguments give identical phantoms.
        shape: (k, j, i) voxels; default kind-specific (about 96-192 per axis).
        spacing: (si, sj, sk) in mm. Default: the grid spans a random field of view and the slice
            thickness (slice profile) is drawn from 0.7-5 mm.
        random_orientation: store the arrays with a random permuted/flipped (LPS, RAS, ...) and,
            half of the time, oblique direction matrix; the anatomy stays put in patient space.
        contrast_phase: CT only; "non-contrast", "arterial" or "portal-venous" (random if None).
        synthseg: SynthSeg-style image: a random intensity per tissue, random blur, bias, noise
            and gamma, scaled to [0, 1] (for contrast-agnostic training). Labels are unchanged.
        field_of_view_cutoff: a tighter, off-centre field of view that cuts anatomy off (and for
            CT the padding outside the reconstruction circle).

    Returns:
        A :class:`Phantom`; image float32 (HU for CT), labels uint8 per :data:`LABELS`\\[kind].
    """
    _check_arguments(kind, shape, spacing, contrast_phase)
    if seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed}")
    shape = None if shape is None else tuple(int(s) for s in shape)  # type: ignore[assignment]
    spacing = None if spacing is None else tuple(float(s) for s in spacing)  # type: ignore
    streams = np.random.SeedSequence([int(seed), KINDS.index(kind)]).spawn(5)
    rng_geometry, rng_anatomy, rng_intensity, rng_noise, rng_orientation = (
        np.random.default_rng(s) for s in streams)
    modality = MODALITIES[kind]
    if modality == "CT" and contrast_phase is None:
        contrast_phase = PHASES[int(rng_intensity.integers(len(PHASES)))]
    if kind == "brain-mr":
        scene = _brain_scene(rng_geometry, rng_anatomy, shape, spacing, field_of_view_cutoff)
    else:
        scene = _torso_scene(kind, rng_geometry, rng_anatomy, shape, spacing,
                             field_of_view_cutoff)
    means, texture, drawn = ((*_synthseg_means(rng_intensity), {}) if synthseg
                             else _tissue_means(kind, contrast_phase, rng_intensity))
    image = _acquire(_render_intensity(scene, means, texture, rng_noise), scene.acquisition,
                     rng_noise, modality, synthseg)
    if modality == "CT" and field_of_view_cutoff and not synthseg:
        image = _pad_outside_reconstruction_circle(image, rng_noise)
    n = scene.acquisition.subslices
    arrays = [image.astype(np.float32), _label_lut(kind)[_decimate(scene.organ, n)],
              _decimate(scene.tissue, n)]
    translation = rng_geometry.uniform(-150, 150, 3)  # where the table put the patient
    volumes = _place(arrays, scene.acquisition.grid, translation)
    if random_orientation:
        background = [float(image.min()) if modality == "CT" and not synthseg else 0.0, 0.0, 0.0]
        volumes = _reorient(volumes, rng_orientation, kind == "body-ct", background)
    image_v, labels_v, tissues_v = volumes
    slice_regions = None
    if scene.region_of is not None and kind == "body-ct":
        slice_regions = _slice_regions(labels_v, scene.region_of, translation[2])
    info: dict[str, object] = {
        "seed": int(seed), "contrast_phase": contrast_phase if modality == "CT" else None,
        "slice_thickness_mm": round(scene.acquisition.thickness, 3),
        "synthseg": bool(synthseg), "random_orientation": bool(random_orientation),
        "field_of_view_cutoff": bool(field_of_view_cutoff),
        "arms_down": bool(scene.arms_down), **drawn,
    }
    return Phantom(image=image_v, labels=labels_v, label_names=dict(LABELS[kind]), kind=kind,
                   modality=modality, slice_regions=slice_regions, tissues=tissues_v,
                   tissue_names=dict(enumerate(_TISSUES)), info=info)


def _place(arrays: list[np.ndarray], grid: _Grid, translation: np.ndarray) -> list[Volume]:
    """Volumes on the canonical LPS grid, shifted by ``translation`` (mm) in patient space."""
    origin = tuple(float(v) for v in np.asarray(grid.origin) + translation)
    return [Volume(a, grid.spacing, origin, np.eye(3)) for a in arrays]


@functools.lru_cache(maxsize=None)
def _label_lut(kind: str) -> np.ndarray:
    """Organ id -> the kind's label value (0 for organs the kind does not label)."""
    lut = np.zeros(256, dtype=np.uint8)
    for value, name in LABELS[kind].items():
        lut[_O[name]] = value
    return lut


def _pad_outside_reconstruction_circle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Set voxels outside the inscribed reconstruction circle to a scanner padding value (HU)."""
    _, rows, cols = image.shape
    jj, ii = np.ogrid[:rows, :cols]
    radius2 = ((jj - (rows - 1) / 2) / (rows / 2)) ** 2 + ((ii - (cols - 1) / 2) / (cols / 2)) ** 2
    outside = radius2 > 1.0
    image = image.copy()
    image[:, outside] = float(rng.choice([-1024.0, -2048.0, -3024.0]))
    return image


def _slice_regions(labels: Volume, region_of: Callable[[float], int], z_shift: float
                   ) -> np.ndarray:
    """REGIONS index of each k-slice, from the patient z of the slice's centre."""
    k, j, i = labels.array.shape
    centres = np.stack([np.full(k, (i - 1) / 2), np.full(k, (j - 1) / 2), np.arange(k)], axis=1)
    z = labels.index_to_physical(centres)[:, 2] - z_shift
    return np.array([region_of(float(v)) for v in z], dtype=np.int64)


def merge_labels(labels: Volume, label_names: dict[int, str],
                 groups: dict[str, Sequence[str]]) -> tuple[Volume, dict[int, str]]:
    """Derive a coarser label set: each new label (1, 2, ... in ``groups`` order) is a union.

    ``groups`` maps a new name to the old names it covers; old labels in no group become 0.
    """
    by_name = {name: value for value, name in label_names.items()}
    lut = np.zeros(max(256, int(labels.array.max()) + 1), dtype=np.uint8)
    names = {}
    for new_value, (new_name, old_names) in enumerate(groups.items(), start=1):
        unknown = [n for n in old_names if n not in by_name]
        if unknown:
            raise InputError(f"label {unknown[0]!r} is not in the label table "
                             f"({', '.join(label_names.values())})")
        lut[[by_name[n] for n in old_names]] = new_value
        names[new_value] = new_name
    return labels.with_array(lut[labels.array]), names


def hvsmr_labels(labels: Volume, label_names: dict[int, str] | None = None) -> Volume:
    """The HVSMR 2016 two-label map (1 myocardium, 2 blood pool) from a heart-mr label map."""
    merged, _ = merge_labels(labels, label_names or LABELS["heart-mr"],
                             {"myocardium": ["myocardium"], "blood_pool": list(_BLOOD_POOL)})
    return merged


# ============================================================================ command line

def add_phantom_command(subparsers) -> None:
    """Register ``deeporganseg phantom`` on an argparse sub-parser collection."""
    parser = subparsers.add_parser(
        "phantom", help="write a synthetic phantom image and its label map",
        description="Generate a synthetic anatomical phantom (deterministic from --seed).")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, metavar="IMG",
                        help="image file (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--labels", required=True, type=Path, metavar="LBL",
                        help="label map file (.nii.gz, .nrrd, .mha)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("K", "J", "I"))
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("SI", "SJ", "SK"),
                        help="voxel spacing in mm")
    parser.add_argument("--oblique", action="store_true",
                        help="random flipped/permuted/oblique direction matrix")
    parser.add_argument("--synthseg", action="store_true",
                        help="random intensity per tissue (contrast-agnostic training)")
    parser.add_argument("--phase", choices=PHASES, help="CT contrast phase (random if omitted)")
    parser.add_argument("--fov-cutoff", action="store_true",
                        help="tight, off-centre field of view that cuts anatomy off")
    parser.set_defaults(handler=run_phantom_command)


def run_phantom_command(args: argparse.Namespace, progress: Callable | None = None,
                        cancel: object | None = None) -> int:
    """Handler of ``deeporganseg phantom``: generate, then write both volumes atomically.

    ``progress(stage, fraction, message)`` and ``cancel`` follow the CLI's handler convention;
    generation takes about a second, so it is not cancellable midway.
    """
    from .labelmap_io import check_outputs_spare_inputs

    report = progress or (lambda stage, fraction, message="": None)
    check_outputs_spare_inputs([args.out, args.labels], [])
    for path in (args.out, args.labels):
        if not path.parent.exists():
            raise InputError(f"{path.parent}: output folder does not exist")
    report("phantom", 0.0, f"generating a {args.kind} phantom (seed {args.seed})")
    phantom = make_phantom(args.kind, args.seed, shape=args.shape, spacing=args.spacing,
                           random_orientation=args.oblique, contrast_phase=args.phase,
                           synthseg=args.synthseg, field_of_view_cutoff=args.fov_cutoff)
    report("phantom", 0.8, "writing")
    write_volume(phantom.image, args.out)
    write_volume(phantom.labels, args.labels)
    report("phantom", 1.0, "done")
    names = ", ".join(f"{v}={n}" for v, n in phantom.label_names.items())
    print(f"{args.kind} seed {args.seed}: {phantom.image.size} voxels, spacing "
          f"{tuple(round(s, 2) for s in phantom.image.spacing)} mm -> {args.out}, {args.labels} "
          f"({names})")
    return 0
