"""The brain-mr kind: the ICBM152 2009 atlas, deformed anew for every case.

The grey/white-matter probability maps of the ICBM152 2009 symmetric template ship inside the
PyPI package ``nilearn`` and are read straight from its files (no download, no nilearn import).
Each case samples them through a random affine (rotation up to 10 degrees, scale 0.88-1.12), an
elastic displacement (1-3.5 mm amplitude) and a radial push around the lateral ventricles, so
the label map (CSF, grey and white matter, at >= 50 % total probability) and the tissue
fractions behind the intensities (partial volume) stay consistent. Around the brain, a layer map
at 2 mm adds subarachnoid CSF, skull and scalp by distance from the brain surface.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from .acquisition import Scene, choose_acquisition
from .fields import smooth_displacement
from .geometry import Grid, rotation_matrix
from .labels import ORGAN_ID, TISSUE_ID


def nilearn_data_folder() -> Path:
    """The folder of data files bundled with the installed nilearn package (no import needed)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("brain-mr phantoms need the ICBM152 maps in nilearn: pip install nilearn")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@functools.lru_cache(maxsize=1)
def icbm152() -> dict[str, object]:
    """The ICBM152 2009 grey/white-matter probability maps and head layers bundled in nilearn.

    Read straight from the files nilearn ships (no download): GM and WM probabilities at 1 mm in
    [0, 1], a brain mask, and an extra-cerebral layer map (subarachnoid CSF, skull, scalp) at 2 mm.
    """
    import SimpleITK as sitk

    data = nilearn_data_folder()
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
        layers[(distance > inner) & (distance <= outer)] = TISSUE_ID[tissue]
        inner = outer
    return layers


def brain_scene(rng_geometry: np.random.Generator, rng_anatomy: np.random.Generator,
                shape: tuple[int, int, int] | None, spacing: tuple[float, float, float] | None,
                fov_cutoff: bool) -> Scene:
    """Deform the ICBM152 maps (affine + elastic + ventricle size) onto a random grid."""
    atlas = icbm152()
    fov = ((200, 240), (200, 240), (170, 200)) if not fov_cutoff else \
        ((160, 200), (160, 200), (120, 160))
    centre = np.array([0.0, 18.0, 10.0]) + rng_geometry.normal(0, 3, 3)
    if fov_cutoff:
        centre += rng_geometry.uniform(-25, 25, 3)
    acquisition = choose_acquisition(rng_geometry, (112, 128, 128), fov, centre, shape, spacing)
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
    organ = np.where(total >= 0.5, np.argmax(stacked, axis=0) + ORGAN_ID["csf"], 0
                     ).astype(np.uint8)
    organ[(organ == 0) & (layers == TISSUE_ID["csf"])] = ORGAN_ID["csf"]
    tissue = layers.copy()
    names = ("csf", "grey_matter", "white_matter")
    intracranial = organ > 0
    tissue[intracranial] = np.array([TISSUE_ID[n] for n in names], dtype=np.uint8)[
        organ[intracranial] - ORGAN_ID["csf"]]
    return Scene(acquisition, tissue, organ, None, fractions)


def _brain_sample_points(rng: np.random.Generator, grid: Grid, atlas: dict) -> np.ndarray:
    """Atlas voxel indices (k, j, i; shape 3 x grid) sampled by each grid voxel of the case."""
    ax, ay, az = grid.axes()
    angles = np.radians(rng.uniform(-10, 10, 3))
    rotation = rotation_matrix(angles)
    scales = rng.uniform(0.88, 1.12, 3)
    linear = np.linalg.inv(rotation * scales[None, :])  # patient -> atlas (about the centre)
    dx, dy, dz = smooth_displacement(rng, grid, rng.uniform(1.0, 3.5), 30.0,
                                     (180.0, 180.0, 180.0))
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
