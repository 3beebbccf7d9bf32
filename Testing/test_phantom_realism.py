"""Specification of the phantoms' clinical detail (docs/phantoms.md, "Patients where it
matters" and "The scan"): what patients show around the aorta, the cava, the pancreas and the
stomach, and the scan's timing, tube voltage and dose.

Each detail is drawn at its own share of cases (``info["patient"]`` lists a case's); the seeds
below were chosen because they draw the detail a test is about, which each test checks first.
A case with ``clinical_detail=False`` is the same body without any of it, so comparing the two
shows what a detail changed.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage as ndi

from DeepOrganSegLib.phantoms import LABELS, Phantom, make_phantom
from DeepOrganSegLib.phantoms.acquisition import low_dose_noise
from DeepOrganSegLib.phantoms.appearance import (enhancement_at, protocol_ct_means,
                                                 tissue_means)
from DeepOrganSegLib.phantoms.geometry import Grid
from DeepOrganSegLib.phantoms.labels import TISSUE_ID, TISSUES
from DeepOrganSegLib.phantoms import patient as patient_module
from DeepOrganSegLib.phantoms import scan as scan_module
from DeepOrganSegLib.phantoms.scan import LowDose, draw_scan

VALUE = {name: value for value, name in LABELS["abdomen-ct"].items()}
#: The details that reshape a labelled organ (the stomach, the cava).
RESHAPING = {"flat_cava", "stomach_collapsed", "stomach_food", "stomach_distended"}
#: About 2.5 mm in-plane and 4 mm slices around L1: the crura, nodes and cava are a few voxels.
FINE = dict(shape=(48, 128, 128), spacing=(2.5, 2.5, 4.0))


@functools.lru_cache(maxsize=None)
def pair(seed: int, phase: str | None = None) -> tuple[Phantom, Phantom]:
    """The case with its clinical detail and the same case without (fine grid)."""
    options = dict(FINE, contrast_phase=phase)
    return (make_phantom("abdomen-ct", seed, **options),
            make_phantom("abdomen-ct", seed, clinical_detail=False, **options))


def tissue(phantom: Phantom, *names: str) -> np.ndarray:
    return np.isin(phantom.tissues.array, [TISSUE_ID[name] for name in names])


def new_tissue(seed: int, name: str, phase: str | None = None) -> np.ndarray:
    """Voxels of tissue ``name`` in the detailed case that were another tissue without it."""
    detailed, plain = pair(seed, phase)
    return tissue(detailed, name) & ~tissue(plain, name)


def liver_under_crura(detailed: Phantom, plain: Phantom) -> np.ndarray:
    """Liver voxels a crus took: where a phantom liver reached the aorta, as a crus keeps it from
    the aorta in patients."""
    return ((detailed.labels.array == 0) & (plain.labels.array == VALUE["liver"])
            & tissue(detailed, "muscle"))


def in_plane_neighbours(mask: np.ndarray, voxels: int = 1) -> np.ndarray:
    return ndi.binary_dilation(mask, structure=np.ones((1, 3, 3), bool), iterations=voxels)


# ----------------------------------------------------------------------------- labels

@pytest.mark.parametrize("seed", [33, 2, 47, 48])  # none reshaping; collapsed; flat cava; both
def test_details_change_no_label_but_the_stomach_and_the_cava_they_reshape(seed):
    """Crura, nodes, closed fat planes and fat lobules are no organ of the table; a collapsed,
    full or distended stomach is still the stomach and a flat cava the cava: labels change only
    where the stomach or the cava is, with or without the detail, or where a crus took the
    liver's edge."""
    detailed, plain = pair(seed)
    assert detailed.info["patient"] and plain.info["patient"] == []
    a, b = detailed.labels.array, plain.labels.array
    reshaped = np.isin(a, [VALUE["stomach"], VALUE["inferior_vena_cava"]]) | \
        np.isin(b, [VALUE["stomach"], VALUE["inferior_vena_cava"]])
    carved = liver_under_crura(detailed, plain)
    assert not ((a != b) & ~reshaped & ~carved).any()
    if not RESHAPING & set(detailed.info["patient"]):
        assert np.array_equal(a != b, carved)


def test_a_case_without_detail_draws_none():
    _, plain = pair(33)
    assert plain.info["patient"] == [] and plain.info["low_dose_noise_hu"] == 0.0
    assert plain.info["tube_kv"] == 120


def test_the_same_seed_gives_the_same_detailed_case():
    first = make_phantom("abdomen-ct", 9, shape=(24, 48, 48))
    second = make_phantom("abdomen-ct", 9, shape=(24, 48, 48))
    assert first.info["low_dose_noise_hu"] > 0 and first.info["patient"]
    assert first.info == second.info
    np.testing.assert_array_equal(first.image.array, second.image.array)
    np.testing.assert_array_equal(first.labels.array, second.labels.array)


# ----------------------------------------------------------------------------- anatomy

def test_crura_hug_the_unenhanced_aorta_at_its_density_and_are_not_the_aorta():
    detailed, plain = pair(39, "non-contrast")
    assert set(detailed.info["patient"]) <= {"crura", "mesenteric_vessels"}
    crura = new_tissue(39, "muscle", "non-contrast")
    aorta = detailed.labels.array == VALUE["aorta"]
    assert np.array_equal(aorta, plain.labels.array == VALUE["aorta"])
    assert not detailed.labels.array[crura].any()
    assert (in_plane_neighbours(aorta, 2) & crura).sum() > 50  # they hug it
    assert (in_plane_neighbours(tissue(detailed, "bone_cortical"), 1) & crura).any()  # vertebra
    height_mm = np.ptp(np.nonzero(crura.any(axis=(1, 2)))[0]) * detailed.image.spacing[2]
    assert height_mm >= 80.0  # from L2-L3 up to the hiatus and beyond
    # what stage 2 must learn: an unenhanced aorta touches tissue of its own density
    image = detailed.image.array
    lumen = ndi.binary_erosion(aorta, np.ones((1, 3, 3), bool))
    assert abs(float(np.median(image[crura]) - np.median(image[lumen]))) < 25.0  # HU


def test_lymph_nodes_are_small_unlabelled_ovals_beside_the_great_vessels():
    detailed, _ = pair(19)
    assert "lymph_nodes" in detailed.info["patient"] and "slim" not in detailed.info["patient"]
    nodes = new_tissue(19, "soft_tissue")
    assert nodes.any() and not detailed.labels.array[nodes].any()
    vessels = np.isin(detailed.labels.array, [VALUE["aorta"], VALUE["inferior_vena_cava"]])
    spacing = detailed.image.spacing[::-1]
    from_vessels = ndi.distance_transform_edt(~vessels, sampling=spacing)
    pieces, count = ndi.label(nodes)
    for piece in range(1, count + 1):
        k, j, i = np.nonzero(pieces == piece)
        width = max(np.ptp(j) * spacing[1], np.ptp(i) * spacing[2])
        assert width <= 12.0  # mm: short axis 5-10 mm, on 2.5 mm voxels
        assert from_vessels[pieces == piece].min() <= 20.0  # mm


def test_a_slim_patients_organs_touch_with_no_fat_plane():
    detailed, plain = pair(46)
    assert "slim" in detailed.info["patient"]
    assert np.array_equal(detailed.labels.array != plain.labels.array,
                          liver_under_crura(detailed, plain))
    closed = new_tissue(46, "soft_tissue")
    assert closed.sum() > 100
    assert tissue(plain, "fat")[closed].all()  # fat became soft tissue, nothing else

    def one_voxel_fat_planes(phantom: Phantom) -> int:
        fat = tissue(phantom, "fat")
        structure = ~fat & ~tissue(phantom, "air")
        return int(sum((fat & np.roll(structure, 1, axis) & np.roll(structure, -1, axis)).sum()
                       for axis in (1, 2)))
    assert one_voxel_fat_planes(detailed) < 0.7 * one_voxel_fat_planes(plain)


def test_a_flattened_cava_is_wider_than_deep():
    detailed, plain = pair(47)
    assert "flat_cava" in detailed.info["patient"]

    def width_over_depth(phantom: Phantom) -> float:
        cava = phantom.labels.array == VALUE["inferior_vena_cava"]
        ratios = [np.ptp(np.nonzero(s)[1]) / max(np.ptp(np.nonzero(s)[0]), 1)
                  for s in cava if s.sum() >= 6]
        return float(np.median(ratios))
    assert width_over_depth(detailed) >= 1.3 * width_over_depth(plain)


@pytest.mark.parametrize("seed, state", [(1, "collapsed"), (0, "food"), (6, "distended")])
def test_the_stomach_states_and_all_of_the_stomach_stays_the_stomach(seed, state):
    detailed, plain = pair(seed)
    assert f"stomach_{state}" in detailed.info["patient"]
    labels = detailed.labels.array
    stomach = labels == VALUE["stomach"]
    for part in ("stomach_wall", "gastric_content"):  # folds and contents are stomach
        assert (labels[tissue(detailed, part)] == VALUE["stomach"]).all()
    volume = stomach.sum() / (plain.labels.array == VALUE["stomach"]).sum()
    wall_share = tissue(detailed, "stomach_wall")[stomach].mean()
    if state == "collapsed":  # small, mostly a thick folded wall
        assert volume < 0.7 and wall_share > 0.5
    elif state == "food":  # mottled food with gas bubbles
        food = tissue(detailed, "bowel_content") & stomach
        assert food.sum() > 0.15 * stomach.sum()
        assert (tissue(detailed, "gas") & stomach).any()
    else:  # wide, thin-walled, gas over an air-fluid level, water unless oral contrast
        assert volume > 1.15 and wall_share < 0.25
        gas, fluid = tissue(detailed, "gas") & stomach, tissue(detailed, "gastric_content") & stomach
        # on each slice the gas lies in front of the fluid (j grows posterior); the body and
        # the antrum each have their own level, and the one slice where they meet holds both
        levels = np.nonzero(gas.any(axis=(1, 2)) & fluid.any(axis=(1, 2)))[0]
        behind = [k for k in levels
                  if np.nonzero(gas[k])[0].max() > np.nonzero(fluid[k])[0].min() + 1]
        assert len(levels) > 5 and len(behind) <= 1, behind
        assert detailed.info["gastric_contents"] in ("water", "oral contrast")


def test_a_fatty_pancreas_is_lobulated_below_0_hu_unenhanced_and_still_the_pancreas():
    detailed, plain = pair(48, "non-contrast")
    assert "fatty_pancreas" in detailed.info["patient"]
    pancreas = detailed.labels.array == VALUE["pancreas"]
    cava = (detailed.labels.array == VALUE["inferior_vena_cava"]) | \
        (plain.labels.array == VALUE["inferior_vena_cava"])  # a flat cava leaves pancreas
    assert not ((pancreas ^ (plain.labels.array == VALUE["pancreas"])) & ~cava).any()
    lobules = tissue(detailed, "fat") & pancreas
    assert lobules.sum() > 0.1 * pancreas.sum()  # fat lobules inside the gland's outline
    hu = float(np.median(detailed.image.array[pancreas]))
    assert -45.0 <= hu <= 0.0  # about half fat: down to -30 HU and below (Kim et al. 2014)
    assert hu < float(np.median(plain.image.array[pancreas])) - 30.0


def test_the_abdominal_fat_is_mottled_by_small_unlabelled_vessels_that_enhance():
    """A patient's abdominal fat carries the mesenteric and omental vessels; a network that has
    seen only clean fat takes vessel-laden fat beside the stomach for food in it."""
    detailed, plain = pair(19, "portal-venous")
    assert "mesenteric_vessels" in detailed.info["patient"]
    vessels = ((detailed.tissues.array != plain.tissues.array)
               & tissue(detailed, "portal_blood", "arterial_blood") & tissue(plain, "fat"))
    assert not detailed.labels.array[vessels].any()  # no organ
    # the fat among the organs (their bounding box): intra-abdominal, not subcutaneous
    among_organs = np.zeros_like(vessels)
    among_organs[ndi.find_objects((plain.labels.array > 0).astype(np.uint8))[0]] = True
    fat = tissue(plain, "fat") & (plain.labels.array == 0) & among_organs
    assert 0.01 < vessels.sum() / fat.sum() < 0.2  # a share of the fat, not all of it
    assert ndi.label(vessels)[1] > 20  # many vessels, not one structure
    thickness = 2.0 * ndi.distance_transform_edt(vessels, sampling=detailed.image.spacing[::-1])
    assert np.percentile(thickness[vessels], 95) <= 6.0  # mm: small vessels, not organs
    image, flat = detailed.image.array, plain.image.array
    assert image[vessels].mean() > flat[vessels].mean() + 100.0  # HU: they enhance


def test_fatty_livers_fall_below_40_hu_unenhanced_in_some_cases():
    drawn = [tissue_means("abdomen-ct", "non-contrast", np.random.default_rng(seed))
             for seed in range(1000)]
    fatty = np.array([info["fatty_liver_hu"] > 0 for _, _, info in drawn])
    liver = np.array([means[TISSUE_ID["liver"]] for means, _, _ in drawn])
    assert fatty.mean() == pytest.approx(0.15, abs=0.03)
    assert 0.05 <= (liver < 40.0).mean() <= 0.15 and liver.min() < 20.0


def test_patient_details_are_drawn_at_their_documented_shares():
    drawn = [patient_module.draw_patient_detail(np.random.default_rng(seed))
             for seed in range(3000)]
    names = [detail.names() for detail in drawn]
    for share, name in ((patient_module.CRURA, "crura"), (patient_module.FLAT_CAVA, "flat_cava"),
                        (patient_module.LYMPH_NODES, "lymph_nodes"), (patient_module.SLIM, "slim"),
                        (patient_module.FATTY_PANCREAS, "fatty_pancreas"),
                        (patient_module.MESENTERIC_VESSELS, "mesenteric_vessels")):
        assert np.mean([name in n for n in names]) == pytest.approx(share, abs=0.03), name
    for state, share in patient_module.STOMACH_STATES.items():
        assert np.mean([d.stomach.name == state for d in drawn]) == pytest.approx(share, abs=0.03)
    shorts = [node[3] for d in drawn for node in d.lymph_nodes]
    assert 2.9 <= min(shorts) and max(shorts) <= 10.0  # mm (Dorfman et al. 1991)


# ----------------------------------------------------------------------------- the scan

def test_enhancement_follows_each_tissues_time_attenuation_curve():
    early, late, portal, delayed = (enhancement_at(t) for t in (20.0, 35.0, 70.0, 240.0))
    assert early["arterial_blood"] >= 0.85 * late["arterial_blood"] > 0
    assert delayed["arterial_blood"] < portal["arterial_blood"] < late["arterial_blood"]
    assert portal["liver"] > max(late["liver"], delayed["liver"], early["liver"])
    assert early["caval_blood"] < 0.2 * portal["caval_blood"]  # the cava fills late
    assert early["kidney_medulla"] < 0.5 * early["kidney_cortex"]  # corticomedullary
    assert delayed["kidney_medulla"] >= 0.9 * delayed["kidney_cortex"]  # nephrogram
    assert enhancement_at(300.0) == delayed and enhancement_at(18.0) == early  # flat outside


def test_the_scan_protocol_is_drawn_at_its_documented_shares():
    scans = [draw_scan(np.random.default_rng(seed), True, len(TISSUES)) for seed in range(4000)]
    times = np.array([s.contrast_time_s for s in scans if s.contrast_time_s is not None])
    assert 1 - times.size / len(scans) == pytest.approx(scan_module.NON_CONTRAST, abs=0.03)
    assert times.min() >= 18.0 and times.max() <= 300.0
    assert (times < 25).mean() > 0.05 and (times > 150).mean() > 0.15  # early and delayed
    for kv, share in scan_module.KV_SHARES.items():
        assert np.mean([s.kv == kv for s in scans]) == pytest.approx(share, abs=0.03)
    assert np.mean([s.low_dose is not None for s in scans]) == pytest.approx(
        scan_module.LOW_DOSE, abs=0.03)
    named = draw_scan(np.random.default_rng(0), False, len(TISSUES))
    assert (named.kv, named.iodine_scale, named.contrast_time_s) == (120, 1.0, None)


def test_iodine_is_1_3_to_1_75_times_brighter_at_low_kv_and_soft_tissue_hardly_changes():
    unenhanced, _, drawn = tissue_means("abdomen-ct", "non-contrast", np.random.default_rng(3))
    scans = [draw_scan(np.random.default_rng(seed), True, len(TISSUES)) for seed in range(300)]
    reference = next(s for s in scans if s.kv == 120 and s.contrast_time_s)
    at_120 = protocol_ct_means(unenhanced, reference, drawn)
    aorta, muscle, fat = (TISSUE_ID[n] for n in ("arterial_blood", "muscle", "fat"))
    for kv in (80, 100):
        drawn_kv = next(s for s in scans if s.kv == kv)
        low = replace(reference, kv=kv, iodine_scale=drawn_kv.iodine_scale,
                      calcium_scale=drawn_kv.calcium_scale, fat_shift_hu=drawn_kv.fat_shift_hu)
        at_low = protocol_ct_means(unenhanced, low, drawn)
        ratio = (at_low[aorta] - unenhanced[aorta]) / (at_120[aorta] - unenhanced[aorta])
        assert 1.25 <= ratio <= 1.75, kv
        assert abs(at_low[muscle] - at_120[muscle]) < 5.0  # HU
        assert -20.0 <= at_low[fat] - at_120[fat] < 0.0  # fat a little darker
        assert at_low[TISSUE_ID["bone_cortical"]] > at_120[TISSUE_ID["bone_cortical"]]


@pytest.mark.parametrize("seed, phase", [(9, "arterial"), (11, "delayed")])
def test_a_timed_case_shows_its_phase_in_the_aorta_and_the_cava(seed, phase):
    case = make_phantom("abdomen-ct", seed, shape=(48, 96, 96))
    assert case.info["contrast_phase"] == phase and case.info["contrast_time_s"]
    image, labels = case.image.array, case.labels.array
    aorta, cava = (float(np.median(image[ndi.binary_erosion(labels == VALUE[n])]))
                   for n in ("aorta", "inferior_vena_cava"))
    if phase == "arterial":  # early: a bright aorta beside an unopacified cava
        assert aorta - cava > 120.0
    else:  # equilibrium: both alike
        assert abs(aorta - cava) < 60.0


def test_low_dose_noise_is_coarse_streaky_and_strongest_across_the_widest_rows():
    grid = Grid.centred((6, 160, 160), np.array([1.5, 1.5, 3.0]), np.zeros(3))
    x, y = np.meshgrid(grid.axes()[0], grid.axes()[1])
    image = np.full(grid.shape, -1000.0, np.float32)
    image[:, (x / 170.0) ** 2 + (y / 100.0) ** 2 <= 1.0] = 40.0  # a wide, flat body
    rng = np.random.default_rng(0)
    fine = ndi.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32),
                               (0.0, 0.7, 0.7))
    dose = LowDose(noise_sd_hu=30.0, grain_mm=3.0, coarse_share=0.5, streak_hu=20.0,
                   streak_mm=30.0, seed=1)
    noise = low_dose_noise(fine, image, grid, dose)
    centre_rows, edge_rows = noise[:, 75:85, 40:120], noise[:, 5:15, 40:120]
    assert 25.0 <= float(centre_rows.std()) <= 55.0  # HU, with the streaks
    assert float(centre_rows.std()) > 1.3 * float(edge_rows.std())  # longer path, more noise

    def correlation(a: np.ndarray, axis: int) -> float:
        return float(np.corrcoef(a.ravel(), np.roll(a, 3, axis).ravel())[0, 1])
    body = noise[:, 60:100, 40:120]
    assert correlation(body, 2) > correlation(body, 1) + 0.1  # horizontal streaks
    assert correlation(fine[:, 60:100, 40:120], 2) < correlation(body, 2)  # coarser grain
