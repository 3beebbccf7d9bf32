""":func:`make_phantom`, one synthetic case deterministic from its seed, and :class:`Phantom`.

It runs the stages described in :mod:`DeepOrganSegLib.phantoms`: the kind's scene (:mod:`.torso`
or :mod:`.brain`), the tissue intensities (:mod:`.appearance`), the scanner (:mod:`.acquisition`),
then the placement in patient space (a random table position, mm) and the optional
re-orientation (:mod:`.orientation`). Independent random streams (geometry, anatomy,
intensity, noise, orientation, variants, CT artefacts, aortic wall, patient detail, scan
protocol) are spawned from the seed and the kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, cast

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .acquisition import acquire, decimate, pad_outside_reconstruction_circle
from .artefacts import add_dense_object_artefacts
from .appearance import (NAMED_PHASE_TIME_S, agnostic_ct_means, patient_ct_means,
                         protocol_ct_means, render_intensity, synthseg_means, tissue_means)
from .brain import brain_scene
from .geometry import Grid
from .labels import KINDS, LABELS, MODALITIES, PHASES, TISSUES, label_lut
from .orientation import reorient
from .patient import NO_PATIENT_DETAIL, PatientDetail, draw_patient_detail
from .scan import REFERENCE_SCAN, Scan, draw_scan, phase_of
from .torso import torso_scene
from .variants import NO_VARIANTS, draw_aortic_wall, draw_variants


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


def _check_arguments(kind: str, shape, spacing, contrast_phase, contrast_agnostic: bool,
                     synthseg: bool) -> None:
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
    if contrast_agnostic and (MODALITIES[kind] != "CT" or synthseg or contrast_phase):
        raise InputError("contrast_agnostic applies to CT phantoms without a contrast phase or "
                         "synthseg (it replaces both)")


def make_phantom(kind: str, seed: int, *, shape: tuple[int, int, int] | None = None,
                 spacing: tuple[float, float, float] | None = None,
                 random_orientation: bool = False, contrast_phase: str | None = None,
                 synthseg: bool = False, field_of_view_cutoff: bool = False,
                 variants: bool = True, contrast_agnostic: bool = False,
                 clinical_detail: bool = True) -> Phantom:
    """Generate one synthetic case, deterministically from ``seed``.

    Args:
        kind: one of :data:`KINDS`.
        seed: any non-negative integer; equal arguments give identical phantoms.
        shape: (k, j, i) voxels; default kind-specific (about 96-192 per axis).
        spacing: (si, sj, sk) in mm. Default: the grid spans a random field of view and the slice
            thickness (slice profile) is drawn from 0.7-5 mm.
        random_orientation: store the arrays with a random permuted/flipped (LPS, RAS, ...) and,
            half of the time, oblique direction matrix; the anatomy stays put in patient space.
        contrast_phase: CT only; "non-contrast", "arterial" or "portal-venous": the reference
            protocol of the HU tables (120 kV, 35 or 70 s after injection). None: drawn (with
            ``clinical_detail``, no contrast or any time 18-300 s after the injection and a
            tube voltage of 80-140 kV; else one of the named phases).
        synthseg: SynthSeg-style image: a random intensity per tissue, random blur, bias, noise
            and gamma, scaled to [0, 1] (for contrast-agnostic training). Labels are unchanged.
        field_of_view_cutoff: a tighter, off-centre field of view that cuts anatomy off (and for
            CT the padding outside the reconstruction circle).
        variants: draw common variants and findings (enlarged spleen or liver, no gallbladder,
            one kidney, renal cysts, ascites, surgical clips, pedicle screws; :mod:`.variants`)
            at their oversampled prevalences; False gives the same body with textbook anatomy.
            Listed in ``info["variants"]``.
        contrast_agnostic: CT only: every tissue inside the body (organs, blood, fat, bone, ...)
            gets an independent random mean in HU (:func:`.appearance.agnostic_ct_means`),
            rendered with the usual CT scanner and artefacts, for contrast-agnostic training;
            ``info["contrast_phase"]`` is then ``"agnostic"``. Labels are unchanged.
        clinical_detail: draw, each at its own share of cases, what patients show where a
            phantom-trained network looks (diaphragmatic crura, a flattened cava, lymph nodes,
            missing fat planes, the stomach's state, a fatty pancreas; :mod:`.patient`), and
            for CT the scan's protocol (low-dose noise; with the phase left to chance, a
            continuous contrast timing and the tube voltage; :mod:`.scan`). Listed in
            ``info["patient"]``, ``info["contrast_time_s"]``, ``info["tube_kv"]`` and
            ``info["low_dose_noise_hu"]``. False leaves all of it out: the case as it is without
            them, bit for bit (for ablations).

    Returns:
        A :class:`Phantom`; image float32 (HU for CT), labels uint8 per :data:`LABELS`\\[kind].
    """
    _check_arguments(kind, shape, spacing, contrast_phase, contrast_agnostic, synthseg)
    if seed < 0:
        raise InputError(f"phantom seed must be a non-negative integer, got {seed}")
    shape = None if shape is None else tuple(int(s) for s in shape)  # type: ignore[assignment]
    spacing = None if spacing is None else tuple(float(s) for s in spacing)  # type: ignore
    # a stream per concern; a new concern gets a new stream (spawned children keep their index),
    # so that adding one leaves every earlier draw of every case as it was
    streams = np.random.SeedSequence([int(seed), KINDS.index(kind)]).spawn(10)
    (rng_geometry, rng_anatomy, rng_intensity, rng_noise, rng_orientation, rng_variants,
     rng_artefacts, rng_aortic_wall, rng_patient, rng_scan) = (np.random.default_rng(s)
                                                               for s in streams)
    drawn_variants = draw_variants(rng_variants) if variants and kind != "brain-mr" \
        else NO_VARIANTS
    aortic_wall = draw_aortic_wall(rng_aortic_wall, plaques=variants)
    modality = MODALITIES[kind]
    detail = clinical_detail and kind != "brain-mr"
    patient = draw_patient_detail(rng_patient) if detail else NO_PATIENT_DETAIL
    timed = contrast_phase is None and not (synthseg or contrast_agnostic)
    scan = draw_scan(rng_scan, timed, len(TISSUES)) if detail and modality == "CT" \
        else REFERENCE_SCAN
    if modality == "CT" and contrast_phase is None and not scan.timed:
        contrast_phase = PHASES[int(rng_intensity.integers(len(PHASES)))]
    if kind == "brain-mr":
        scene = brain_scene(rng_geometry, rng_anatomy, shape, spacing, field_of_view_cutoff)
    else:
        scene = torso_scene(kind, rng_geometry, rng_anatomy, shape, spacing,
                            field_of_view_cutoff, drawn_variants, rng_variants, aortic_wall,
                            patient)
    means, texture, drawn = _intensities(kind, contrast_phase, synthseg, contrast_agnostic, scan,
                                         patient, rng_intensity)
    intensity = render_intensity(scene, means, texture, rng_noise)
    if modality == "CT" and not synthseg:
        render = scene.acquisition.grid.subdivided(scene.acquisition.subslices)
        intensity = add_dense_object_artefacts(intensity, scene.tissue, render, rng_artefacts)
    image = acquire(intensity, scene.acquisition, rng_noise, modality, synthseg, scan.low_dose)
    if modality == "CT" and field_of_view_cutoff and not synthseg:
        image = pad_outside_reconstruction_circle(image, rng_noise)
    n = scene.acquisition.subslices
    arrays = [image.astype(np.float32), label_lut(kind)[decimate(scene.organ, n)],
              decimate(scene.tissue, n)]
    translation = rng_geometry.uniform(-150, 150, 3)  # where the table put the patient
    volumes = _place(arrays, scene.acquisition.grid, translation)
    if random_orientation:
        background = [float(image.min()) if modality == "CT" and not synthseg else 0.0, 0.0, 0.0]
        volumes = reorient(volumes, rng_orientation, kind == "body-ct", background)
    image_v, labels_v, tissues_v = volumes
    slice_regions = None
    if scene.region_of is not None and kind == "body-ct":
        slice_regions = _slice_regions(labels_v, scene.region_of, translation[2])
    info: dict[str, object] = {
        "seed": int(seed), "contrast_phase": contrast_phase if modality == "CT" else None,
        "patient": patient.names(),
        "low_dose_noise_hu": round(scan.low_dose.noise_sd_hu, 1)
        if scan.low_dose and not synthseg else 0.0,
        "slice_thickness_mm": round(scene.acquisition.thickness, 3),
        "synthseg": bool(synthseg), "random_orientation": bool(random_orientation),
        "field_of_view_cutoff": bool(field_of_view_cutoff),
        "arms_down": bool(scene.arms_down), "variants": drawn_variants.names()
        + (["aortic_calcification"] if aortic_wall.plaques and kind != "brain-mr" else []),
        **drawn,
    }
    return Phantom(image=image_v, labels=labels_v, label_names=dict(LABELS[kind]), kind=kind,
                   modality=modality, slice_regions=slice_regions, tissues=tissues_v,
                   tissue_names=dict(enumerate(TISSUES)), info=info)


def _intensities(kind: str, phase: str | None, synthseg: bool, contrast_agnostic: bool,
                 scan: Scan, patient: PatientDetail, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """Mean and texture SD per tissue id, and what was drawn beyond the tables for the case's
    ``info``: for CT at a phase (named or timed) the phase, the time after the start of
    injection (s; None without contrast) and the tube voltage (kV) the means are at."""
    if synthseg:
        return (*synthseg_means(rng), {})
    if contrast_agnostic:
        return (*agnostic_ct_means(rng), {"contrast_phase": "agnostic"})
    if MODALITIES[kind] != "CT":
        means, texture, table = tissue_means(kind, phase, rng)
        return means, texture, dict(table)
    drawn: dict[str, object]
    if scan.timed:
        means, texture, table = tissue_means(kind, "non-contrast", rng)
        means = protocol_ct_means(means, scan, table)
        time_s = None if scan.contrast_time_s is None else round(scan.contrast_time_s, 1)
        drawn = {**table, "contrast_phase": phase_of(scan.contrast_time_s),
                 "contrast_time_s": time_s}
    else:
        means, texture, table = tissue_means(kind, phase, rng)
        drawn = {**table, "contrast_time_s": NAMED_PHASE_TIME_S[cast(str, phase)]}
    means, drawn = patient_ct_means(means, drawn, patient)
    return means, texture, {**drawn, "tube_kv": scan.kv}


def _place(arrays: list[np.ndarray], grid: Grid, translation: np.ndarray) -> list[Volume]:
    """Volumes on the canonical LPS grid, shifted by ``translation`` (mm) in patient space."""
    origin = cast("tuple[float, float, float]",
                  tuple(float(v) for v in np.asarray(grid.origin) + translation))
    return [Volume(a, grid.spacing, origin, np.eye(3)) for a in arrays]


def _slice_regions(labels: Volume, region_of: Callable[[float], int], z_shift: float
                   ) -> np.ndarray:
    """REGIONS index of each k-slice, from the patient z of the slice's centre."""
    k, j, i = labels.array.shape
    centres = np.stack([np.full(k, (i - 1) / 2), np.full(k, (j - 1) / 2), np.arange(k)], axis=1)
    z = labels.index_to_physical(centres)[:, 2] - z_shift
    return np.array([region_of(float(v)) for v in z], dtype=np.int64)
