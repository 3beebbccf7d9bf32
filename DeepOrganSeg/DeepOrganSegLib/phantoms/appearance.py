"""What each tissue looks like: mean intensities per modality and phase, and their rendering.

Each case draws one mean per tissue uniformly inside the published ranges below (CT in
Hounsfield units per contrast phase; MR relative to blood or white matter, arbitrary positive
units), plus a texture SD; :func:`render_intensity` paints these onto the tissue map of a
:class:`~.acquisition.Scene`, mixing the brain's partial-volume fractions, and adds a correlated
texture (about 3 mm). SynthSeg mode (:func:`synthseg_means`) instead gives every tissue an
independent random mean in [0, 1]; contrast-agnostic CT (:func:`agnostic_ct_means`) gives every
tissue inside the body an independent random mean in Hounsfield units, so that a CT network must
tell organs apart by shape and context rather than by one phase's HU ordering.

Beyond the named phases, :func:`protocol_ct_means` sets a case's CT means from its unenhanced
ones at any time after the injection and tube voltage (:class:`~.scan.Scan`), and
:func:`patient_ct_means` adds what the patient's details change (:class:`~.patient.PatientDetail`:
a fatty pancreas, a stomach distended with water).
"""

from __future__ import annotations

from typing import Mapping, cast

import numpy as np

from .acquisition import Scene
from .fields import noise_field
from .labels import MODALITIES, PHASES, TISSUE_ID, TISSUES
from .patient import PatientDetail
from .scan import Scan

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
    "ascites": ((0, 20), (0, 25), (5, 30), 6.0),  # free fluid: water, hardly enhancing
    "metal": ((3071, 3071), (3071, 3071), (3071, 3071), 0.0),  # titanium, beyond the scale
}

#: Share of abdominal CTs with positive oral contrast in the bowel (drunk before the scan).
BOWEL_CONTRAST_SHARE = 0.2

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
    "ascites": ((0.8, 1.0), 0.03), "metal": ((0.0, 0.01), 0.0),  # fluid bright, metal void
}

# T1-weighted (MPRAGE-like) brain MR, relative to white matter ~ 0.8: (range, texture SD).
_T1W = {
    "air": ((0.0, 0.01), 0.0), "csf": ((0.1, 0.22), 0.02), "grey_matter": ((0.42, 0.55), 0.025),
    "white_matter": ((0.72, 0.85), 0.02), "fat": ((0.8, 1.0), 0.05),
    "muscle": ((0.3, 0.4), 0.03), "bone_cortical": ((0.02, 0.07), 0.01),
    "bone_marrow": ((0.5, 0.7), 0.05),
}


def tissue_means(kind: str, phase: str | None, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, float | str]]:
    """Mean intensity and texture SD per tissue id for the kind (CT: HU for the phase), and
    what was drawn beyond the table (CT: the HU a fatty liver lost, ``fatty_liver_hu``), for
    the phantom's ``info``."""
    means = np.zeros(len(TISSUES), dtype=np.float32)
    texture = np.zeros(len(TISSUES), dtype=np.float32)
    if MODALITIES[kind] == "CT":
        column = PHASES.index(phase)
        for name, row in _CT_HU.items():
            lo, hi = cast("tuple[float, float]", row[column])  # a phase's range: column < 3
            means[TISSUE_ID[name]] = rng.uniform(lo, hi)
            texture[TISSUE_ID[name]] = row[3]
        if phase == "portal-venous":  # spleen within +-25 HU of the liver, darker or brighter
            means[TISSUE_ID["spleen"]] = means[TISSUE_ID["liver"]] + rng.uniform(-25, 20)
        # patients differ beyond one table: a fatty liver loses up to 40 HU (15 % of cases);
        # the stomach holds water, a meal or positive oral contrast
        fatty = float(rng.uniform(10.0, 40.0)) if rng.random() < 0.15 else 0.0
        means[TISSUE_ID["liver"]] -= fatty
        contents = ("water", "meal", "oral contrast")[int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
        means[TISSUE_ID["gastric_content"]] = {
            "water": rng.uniform(-5, 20), "meal": rng.uniform(20, 70),
            "oral contrast": rng.uniform(150, 350)}[contents]
        # positive oral contrast drunk before the scan fills the bowel too
        bowel_contrast = bool(rng.random() < BOWEL_CONTRAST_SHARE)
        bowel_hu = float(rng.uniform(150, 400))
        if bowel_contrast:
            means[TISSUE_ID["bowel_content"]] = bowel_hu
        return means, texture, {"fatty_liver_hu": round(fatty, 1), "gastric_contents": contents,
                                "bowel_contrast": bowel_contrast}
    table = _BSSFP if kind == "heart-mr" else _T1W
    for name, ((lo, hi), sd) in table.items():
        means[TISSUE_ID[name]] = rng.uniform(lo, hi)
        texture[TISSUE_ID[name]] = sd
    return means, texture, {}


#: Time-attenuation curves (Bae, Radiology 2010; Goshima et al., AJR 2006): each tissue's
#: enhancement above its unenhanced HU at these times after the start of injection (s),
#: piecewise linear between them and flat outside. At 35 s (late arterial) and 70 s (portal
#: venous) it is the table's (the phase's mid-range minus the unenhanced mid-range); at 20 s
#: (early arterial) a share of the late-arterial one, at 240 s (delayed, 3-5 min) a share of
#: the portal-venous one, below (docs/phantoms.md, "Contrast timing"). Tissues not listed do
#: not enhance.
ENHANCEMENT_ANCHORS_S = (20.0, 35.0, 70.0, 240.0)
#: The time (s) after the start of injection a named phase's table column stands for.
NAMED_PHASE_TIME_S: dict[str, float | None] = {
    "non-contrast": None, "arterial": ENHANCEMENT_ANCHORS_S[1],
    "portal-venous": ENHANCEMENT_ANCHORS_S[2]}
_CURVES = {  # tissue: (early-arterial share of late arterial, delayed share of portal venous)
    "arterial_blood": (0.9, 0.6), "right_heart_blood": (1.0, 0.6), "caval_blood": (0.1, 0.95),
    "portal_blood": (0.3, 0.55), "liver_vessel": (0.2, 0.65), "liver": (0.3, 0.6),
    "liver_lesion": (0.5, 0.8), "spleen": (0.7, 0.9), "kidney_cortex": (0.8, 0.8),
    "kidney_medulla": (0.3, 1.15), "pancreas": (0.6, 0.8), "stomach_wall": (0.6, 0.75),
    "bowel_wall": (0.6, 0.75), "myocardium": (0.8, 0.6), "thyroid": (0.7, 0.7),
    "soft_tissue": (0.5, 0.9), "muscle": (0.5, 1.0), "bone_marrow": (0.5, 1.0),
    "ascites": (0.0, 1.0),
}


def enhancement_at(time_s: float) -> dict[str, float]:
    """Each enhancing tissue's enhancement (HU at 120 kV, mid-range patient) ``time_s`` seconds
    after the start of injection."""
    out = {}
    for name, (early, delayed) in _CURVES.items():
        unenhanced, late, portal = (float(np.mean(_CT_HU[name][column])) for column in range(3))
        late, portal = late - unenhanced, portal - unenhanced
        out[name] = float(np.interp(time_s, ENHANCEMENT_ANCHORS_S,
                                    [early * late, late, portal, delayed * portal]))
    return out


def protocol_ct_means(unenhanced: np.ndarray, scan: Scan, drawn: Mapping[str, object]
                      ) -> np.ndarray:
    """CT means (HU) per tissue id at ``scan``'s time after injection and tube voltage, from a
    case's unenhanced means and what :func:`tissue_means` drew (``drawn``: its oral contrast).
    Iodine (enhancement, positive oral contrast) scales by ``scan.iodine_scale``, bone by
    ``scan.calcium_scale``; fat shifts by ``scan.fat_shift_hu``."""
    means = unenhanced.copy()
    if scan.contrast_time_s is not None:
        for name, hu in enhancement_at(scan.contrast_time_s).items():
            tissue = TISSUE_ID[name]
            means[tissue] += hu * scan.enhancement * scan.tissue_enhancement[tissue] \
                * scan.iodine_scale
    means[[TISSUE_ID["bone_cortical"], TISSUE_ID["bone_marrow"]]] *= scan.calcium_scale
    means[TISSUE_ID["fat"]] += scan.fat_shift_hu
    if drawn["gastric_contents"] == "oral contrast":
        means[TISSUE_ID["gastric_content"]] *= scan.iodine_scale
    if drawn["bowel_contrast"]:
        means[TISSUE_ID["bowel_content"]] *= scan.iodine_scale
    return means


def patient_ct_means(means: np.ndarray, drawn: Mapping[str, object], patient: PatientDetail
                     ) -> tuple[np.ndarray, dict[str, object]]:
    """CT means with the patient's details: a fatty pancreas's parenchyma mixes in fat (its
    lobules are fat already), a distended stomach holds water unless it holds oral contrast;
    and ``drawn`` updated (``gastric_contents``)."""
    means = means.copy()
    fat_share = patient.pancreas_parenchyma_fat
    pancreas = TISSUE_ID["pancreas"]
    means[pancreas] = (1.0 - fat_share) * means[pancreas] + fat_share * means[TISSUE_ID["fat"]]
    if patient.stomach.name == "distended" and drawn["gastric_contents"] != "oral contrast":
        means[TISSUE_ID["gastric_content"]] = patient.water_hu
        return means, {**drawn, "gastric_contents": "water"}
    return means, dict(drawn)


def synthseg_means(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SynthSeg-style contrast: an independent random mean and texture per tissue, in [0, 1]."""
    means = rng.uniform(0.0, 1.0, len(TISSUES)).astype(np.float32)
    texture = rng.uniform(0.0, 0.06, len(TISSUES)).astype(np.float32)
    return means, texture


#: Contrast-agnostic CT (SynthSeg's random intensity per label, Billot et al. 2023, in HU): the
#: range of every tissue's mean and of its texture SD. Wide enough to hold any organ at any
#: contrast timing and kV (unenhanced fat to arterial aorta at 80 kV would reach ~600 HU; the
#: trial in issue 34 used this range). Air, gas, lung and metal keep their physical values:
#: no contrast medium changes them, and the body's outline and the lungs stay what a CT shows.
AGNOSTIC_HU = (-200.0, 500.0)
AGNOSTIC_TEXTURE_SD_HU = (0.0, 25.0)
_PHYSICAL_TISSUES = ("air", "gas", "lung", "metal", "table")


def agnostic_ct_means(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Contrast-agnostic CT: an independent uniform mean (HU, :data:`AGNOSTIC_HU`) and texture SD
    per tissue, except the physical ones (air, gas, lung, metal, the table), which keep the
    table's values."""
    means, texture, _ = tissue_means("abdomen-ct", "non-contrast", rng)
    random_tissues = [TISSUE_ID[name] for name in TISSUES if name not in _PHYSICAL_TISSUES]
    means[random_tissues] = rng.uniform(*AGNOSTIC_HU, len(random_tissues))
    texture[random_tissues] = rng.uniform(*AGNOSTIC_TEXTURE_SD_HU, len(random_tissues))
    return means, texture


def render_intensity(scene: Scene, means: np.ndarray, texture_sd: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Intensity on the render grid: tissue means (or mixtures) plus a correlated texture."""
    render = scene.acquisition.grid.subdivided(scene.acquisition.subslices)
    image = means[scene.tissue]
    if scene.fractions is not None:
        mixed = sum(scene.fractions[name] * means[TISSUE_ID[name]] for name in scene.fractions)
        total = sum(scene.fractions.values())
        intracranial = scene.organ > 0
        outside_fractions = (1.0 - np.minimum(total, 1.0)) * means[TISSUE_ID["csf"]]
        image = np.where(intracranial, mixed + outside_fractions, image).astype(np.float32)
    texture = noise_field(rng, render, 3.0)
    image += texture_sd[scene.tissue] * texture
    return image
