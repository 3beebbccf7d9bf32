"""Specification of the synthetic anatomy phantoms (DeepOrganSegLib.phantoms).

Shapes are kept small so that the whole file runs in well under 30 s on two cores; the anatomy is
defined in millimetres, so coarse grids still show it.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest
from scipy import ndimage as ndi

from DeepOrganSegLib.cli import phantom as phantom_command
from DeepOrganSegLib.errors import InputError
from DeepOrganSegLib.bodypart import REGIONS
from DeepOrganSegLib.phantoms import (HVSMR_LABELS, KINDS, LABELS, PHASES, Phantom,
                                      hvsmr_labels, make_phantom, merge_labels)
from DeepOrganSegLib.phantoms.brain import icbm152, nilearn_data_folder
from DeepOrganSegLib.phantoms import variants as variants_module
from DeepOrganSegLib.phantoms.appearance import BOWEL_CONTRAST_SHARE, tissue_means
from DeepOrganSegLib.phantoms.artefacts import BEAM_HARDENING_SHARE, add_dense_object_artefacts
from DeepOrganSegLib.phantoms.geometry import Grid
from DeepOrganSegLib.phantoms.labels import TISSUE_ID
from DeepOrganSegLib.volume_io import read_volume

SMALL = {"abdomen-ct": (40, 64, 64), "heart-mr": (40, 48, 48), "brain-mr": (40, 48, 48),
         "body-ct": (96, 40, 40)}
needs_nilearn = pytest.mark.skipif(importlib.util.find_spec("nilearn") is None,
                                   reason="nilearn (ICBM152 maps) not installed")

# Published median HU ranges (docs/phantoms.md cites the sources), per tissue and phase.
PUBLISHED_HU = {
    "non-contrast": {"liver": (50, 70), "arterial_blood": (35, 50), "fat": (-120, -80),
                     "muscle": (40, 60), "lung": (-900, -700)},
    "arterial": {"arterial_blood": (250, 400), "fat": (-120, -80), "muscle": (40, 60),
                 "lung": (-900, -700)},
    "portal-venous": {"liver": (90, 130), "kidney_cortex": (150, 200),
                      "arterial_blood": (150, 250), "fat": (-120, -80), "muscle": (40, 60),
                      "lung": (-900, -700)},
}


@pytest.fixture(scope="module")
def small_abdomen() -> Phantom:
    """A small abdominal CT (random phase and thickness) for geometry and determinism tests."""
    return make_phantom("abdomen-ct", 4, shape=SMALL["abdomen-ct"])


@pytest.fixture(scope="module")
def heart() -> Phantom:
    return make_phantom("heart-mr", 4, shape=(48, 64, 64))


@pytest.fixture(scope="module")
def brain() -> Phantom:
    return make_phantom("brain-mr", 2, shape=(40, 56, 56))


@pytest.fixture(scope="module")
def abdomen() -> Phantom:
    """A portal-venous abdominal CT at about 3 mm, shared by the anatomy tests."""
    return make_phantom("abdomen-ct", 11, shape=(64, 112, 112), contrast_phase="portal-venous")


def centroid_mm(phantom: Phantom, name: str) -> np.ndarray:
    """Patient-space (LPS, mm) centroid of a label."""
    value = {n: v for v, n in phantom.label_names.items()}[name]
    indices = np.argwhere(phantom.labels.array == value)
    assert indices.size, f"{name} is absent"
    return phantom.labels.index_to_physical(indices.mean(axis=0)[::-1])


def tissue_mask(phantom: Phantom, *names: str) -> np.ndarray:
    ids = [v for v, n in phantom.tissue_names.items() if n in names]
    return np.isin(phantom.tissues.array, ids)


def interior(mask: np.ndarray, voxels: int = 1) -> np.ndarray:
    """The mask shrunk in-plane, away from partial-volume edges."""
    return ndi.binary_erosion(mask, structure=np.ones((1, 3, 3)), iterations=voxels)


def spine_centre_mm(phantom: Phantom, z_range: tuple[float, float]) -> np.ndarray:
    """Centroid of the vertebral bone near the body's midline, within a z range (LPS mm)."""
    bone = tissue_mask(phantom, "bone_cortical", "bone_marrow")
    k, j, i = np.nonzero(bone)
    points = phantom.tissues.index_to_physical(np.stack([i, j, k], axis=1))
    body = np.argwhere(phantom.tissues.array > 0)
    mid_x = phantom.tissues.index_to_physical(body.mean(axis=0)[::-1])[0]
    keep = (np.abs(points[:, 0] - mid_x) < 25) & (points[:, 2] > z_range[0]) & \
        (points[:, 2] < z_range[1])
    return points[keep].mean(axis=0)


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_phantoms(small_abdomen):
    a = small_abdomen
    b = make_phantom("abdomen-ct", 4, shape=SMALL["abdomen-ct"])
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert a.image.origin == b.image.origin and a.image.spacing == b.image.spacing


def test_different_seeds_give_different_anatomy():
    a = make_phantom("abdomen-ct", 1, shape=SMALL["abdomen-ct"], spacing=(6, 6, 8))
    b = make_phantom("abdomen-ct", 2, shape=SMALL["abdomen-ct"], spacing=(6, 6, 8))
    assert (a.labels.array != b.labels.array).mean() > 0.01


def test_the_same_seed_renders_the_same_anatomy_at_any_resolution():
    coarse = make_phantom("abdomen-ct", 14, shape=(32, 48, 48))
    fine = make_phantom("abdomen-ct", 14, shape=(48, 80, 80))
    for name in ("liver", "spleen", "left_kidney", "aorta"):
        shift = np.linalg.norm(centroid_mm(coarse, name) - centroid_mm(fine, name))
        assert shift < max(coarse.image.spacing), name
    coarse_ml, fine_ml = ((p.labels.array == 1).sum() * p.labels.voxel_volume_ml
                          for p in (coarse, fine))
    assert abs(coarse_ml - fine_ml) < 0.1 * fine_ml


def test_contrast_phase_changes_intensities_not_anatomy():
    plain = make_phantom("abdomen-ct", 5, shape=SMALL["abdomen-ct"], contrast_phase="non-contrast")
    venous = make_phantom("abdomen-ct", 5, shape=SMALL["abdomen-ct"],
                          contrast_phase="portal-venous")
    np.testing.assert_array_equal(plain.labels.array, venous.labels.array)
    aorta = plain.labels.array == 8
    assert np.median(venous.image.array[aorta]) > np.median(plain.image.array[aorta]) + 80


# ----------------------------------------------------------------------------- label tables

def test_label_tables_are_the_documented_stable_values():
    assert LABELS["abdomen-ct"] == {
        1: "liver", 2: "spleen", 3: "right_kidney", 4: "left_kidney", 5: "stomach",
        6: "pancreas", 7: "gallbladder", 8: "aorta", 9: "inferior_vena_cava"}
    assert LABELS["heart-mr"] == {
        1: "myocardium", 2: "left_ventricle", 3: "right_ventricle", 4: "left_atrium",
        5: "right_atrium", 6: "aorta", 7: "pulmonary_artery"}
    assert LABELS["brain-mr"] == {1: "csf", 2: "grey_matter", 3: "white_matter"}
    assert LABELS["body-ct"] == LABELS["abdomen-ct"]
    assert REGIONS == ("head", "neck", "chest", "abdomen", "pelvis", "legs")


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "brain-mr"] +
                         [pytest.param("brain-mr", marks=needs_nilearn)])
def test_every_target_label_is_present_and_no_other_value(kind, request):
    fixture = {"abdomen-ct": "small_abdomen", "heart-mr": "heart", "brain-mr": "brain"}
    phantom = (request.getfixturevalue(fixture[kind]) if kind in fixture
               else make_phantom(kind, 0, shape=SMALL[kind]))
    values = set(np.unique(phantom.labels.array)) - {0}
    assert values == set(LABELS[kind]), f"missing {set(LABELS[kind]) - values}"
    assert phantom.label_names == LABELS[kind]
    assert phantom.modality == ("CT" if kind.endswith("-ct") else "MR")


def test_hvsmr_labels_merge_chambers_and_vessels_into_the_blood_pool(heart):
    merged = hvsmr_labels(heart.labels)
    original = heart.labels.array
    assert HVSMR_LABELS == {1: "myocardium", 2: "blood_pool"}
    np.testing.assert_array_equal(merged.array == 1, original == 1)
    np.testing.assert_array_equal(merged.array == 2, np.isin(original, [2, 3, 4, 5, 6, 7]))


def test_merge_labels_rejects_names_not_in_the_table(heart):
    with pytest.raises(InputError, match="not in the label table"):
        merge_labels(heart.labels, heart.label_names, {"pool": ["left_ventricle", "lung"]})


# ----------------------------------------------------------------------------- geometry

def test_image_and_labels_share_one_grid_with_the_documented_types(small_abdomen):
    image, labels = small_abdomen.image, small_abdomen.labels
    assert image.array.dtype == np.float32 and labels.array.dtype == np.uint8
    assert image.array.shape == labels.array.shape == SMALL["abdomen-ct"]
    assert image.spacing == labels.spacing and image.origin == labels.origin
    np.testing.assert_array_equal(image.direction, labels.direction)


def test_requested_shape_and_spacing_are_honoured():
    phantom = make_phantom("abdomen-ct", 4, shape=(30, 50, 60), spacing=(6.0, 6.5, 9.0))
    assert phantom.image.array.shape == (30, 50, 60)
    assert phantom.image.spacing == (6.0, 6.5, 9.0)


def test_spacing_alone_sizes_the_grid_to_the_anatomy():
    phantom = make_phantom("abdomen-ct", 4, spacing=(8.0, 8.0, 8.0))
    k, j, i = phantom.image.array.shape
    assert 25 <= k <= 60 and 40 <= i <= 60  # about 200-480 mm of abdomen, 320-480 mm wide


@pytest.mark.parametrize("seed", range(4))
def test_default_slice_thickness_is_between_0_7_and_5_mm(seed):
    phantom = make_phantom("abdomen-ct", seed, shape=(24, 32, 32))
    assert 0.7 <= phantom.info["slice_thickness_mm"] <= 5.0


def test_random_orientation_keeps_the_anatomy_in_patient_space(small_abdomen):
    plain = small_abdomen
    turned = make_phantom("abdomen-ct", 4, shape=SMALL["abdomen-ct"], random_orientation=True)
    assert not np.allclose(turned.image.direction, np.eye(3))
    for name in ("liver", "right_kidney", "aorta"):
        shift = np.linalg.norm(centroid_mm(turned, name) - centroid_mm(plain, name))
        assert shift < 1.5 * max(plain.image.spacing), name


def test_random_orientation_covers_flips_permutations_and_oblique_directions():
    directions = [make_phantom("heart-mr", seed, shape=(8, 8, 8), spacing=(20, 20, 20),
                               random_orientation=True).image.direction for seed in range(12)]
    assert any(np.allclose(d, np.diag([-1, -1, 1])) or
               (np.allclose(np.abs(d), np.round(np.abs(d))) and not np.allclose(d, np.eye(3)))
               for d in directions)
    oblique = [d for d in directions if not np.allclose(np.abs(d), np.round(np.abs(d)))]
    assert oblique, "no oblique direction in 12 cases"
    for d in directions:
        np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-6)


def test_field_of_view_cutoff_cuts_the_body_and_pads_outside_the_reconstruction_circle():
    phantom = make_phantom("abdomen-ct", 8, shape=SMALL["abdomen-ct"], field_of_view_cutoff=True)
    body = phantom.tissues.array > 0
    edges = np.concatenate([body[:, 0, :].ravel(), body[:, -1, :].ravel(),
                            body[:, :, 0].ravel(), body[:, :, -1].ravel()])
    assert edges.any()
    assert phantom.image.array.min() <= -1024


# ----------------------------------------------------------------------------- intensities

@pytest.mark.parametrize("phase", PHASES)
def test_ct_tissue_medians_lie_in_published_ranges_for_the_phase(phase):
    phantom = make_phantom("abdomen-ct", 21, shape=(44, 144, 144), contrast_phase=phase)
    for tissue, (low, high) in PUBLISHED_HU[phase].items():
        voxels = phantom.image.array[interior(tissue_mask(phantom, tissue))]
        assert voxels.size > 20, tissue
        median = np.median(voxels)
        if tissue == "liver":  # the published values are those of livers without fat
            median += phantom.info["fatty_liver_hu"]
        assert low <= median <= high, f"{tissue}: {median:.0f} HU"


def test_ct_bone_gas_and_bowel_contents_have_their_typical_densities(abdomen):
    image = abdomen.image.array
    assert 300 <= np.median(image[tissue_mask(abdomen, "bone_cortical", "bone_marrow")]) <= 1000
    assert -100 <= np.median(image[interior(tissue_mask(abdomen, "bowel_content"))]) <= 50
    assert np.median(image[interior(tissue_mask(abdomen, "gas"))]) < -700


def test_portal_venous_spleen_lies_within_25_hu_of_the_liver_either_side():
    """Real portal-venous CT has the spleen darker (the team's real case: 80 vs 93 HU) or
    brighter than the liver; the phantoms must show both, within about 25 HU."""
    differences = []
    for seed in range(6):
        phantom = make_phantom("abdomen-ct", seed, shape=(40, 96, 96),
                               contrast_phase="portal-venous")
        image, labels = phantom.image.array, phantom.labels.array
        liver = np.median(image[interior(labels == 1)]) + phantom.info["fatty_liver_hu"]
        differences.append(np.median(image[interior(labels == 2)]) - liver)
    assert all(-35 <= d <= 30 for d in differences), differences
    assert min(differences) < -5 and max(differences) > 5, differences


def test_mr_images_are_positive_and_bright_blood_is_brighter_than_myocardium(heart):
    image, labels = heart.image.array, heart.labels.array
    assert image.min() >= 0
    assert np.median(image[labels == 2]) > 2 * np.median(image[labels == 1])


@needs_nilearn
def test_brain_t1_contrast_orders_white_over_grey_over_csf(brain):
    image, labels = brain.image.array, brain.labels.array
    csf, grey, white = (np.median(image[labels == v]) for v in (1, 2, 3))
    assert white > grey > csf > 0


@needs_nilearn
def test_brain_grey_white_contrast_resembles_the_icbm152_t1(brain):
    import SimpleITK as sitk

    atlas = icbm152()
    folder = nilearn_data_folder()
    t1 = sitk.GetArrayFromImage(sitk.ReadImage(
        str(folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))).astype(float)
    real = np.median(t1[atlas["gm"] > 0.7]) / np.median(t1[atlas["wm"] > 0.7])
    image, labels = brain.image.array, brain.labels.array
    synthetic = np.median(image[labels == 2]) / np.median(image[labels == 3])
    assert abs(synthetic - real) < 0.15


def test_contrast_agnostic_ct_draws_every_body_tissue_at_random_hu_and_keeps_the_anatomy(
        small_abdomen):
    from DeepOrganSegLib.phantoms.appearance import AGNOSTIC_HU

    cases = [make_phantom("abdomen-ct", seed, shape=SMALL["abdomen-ct"], contrast_agnostic=True)
             for seed in (4, 5)]
    np.testing.assert_array_equal(cases[0].labels.array, small_abdomen.labels.array)
    assert cases[0].info["contrast_phase"] == "agnostic"
    medians = [{name: float(np.median(case.image.array[case.labels.array == value]))
                for value, name in case.label_names.items()
                if (case.labels.array == value).sum() > 50} for case in cases]
    for case_medians in medians:
        assert all(AGNOSTIC_HU[0] - 60 <= hu <= AGNOSTIC_HU[1] + 60
                   for hu in case_medians.values()), case_medians
    # the HU order of the organs differs from case to case: no order to learn
    shared = sorted(set(medians[0]) & set(medians[1]))
    assert sorted(shared, key=medians[0].get) != sorted(shared, key=medians[1].get)
    outside = cases[0].tissues.array == 0  # air keeps its physical value
    assert np.median(cases[0].image.array[outside]) < -900


def test_contrast_agnostic_is_for_ct_without_a_phase():
    with pytest.raises(InputError, match="contrast_agnostic"):
        make_phantom("brain-mr", 0, contrast_agnostic=True)
    with pytest.raises(InputError, match="contrast_agnostic"):
        make_phantom("abdomen-ct", 0, contrast_agnostic=True, contrast_phase="arterial")


def test_synthseg_mode_randomises_contrast_in_unit_range_and_keeps_labels(small_abdomen):
    a = make_phantom("abdomen-ct", 4, shape=SMALL["abdomen-ct"], synthseg=True)
    b = small_abdomen
    assert 0.0 <= a.image.array.min() and a.image.array.max() <= 1.0
    np.testing.assert_array_equal(a.labels.array, b.labels.array)


# ----------------------------------------------------------------------------- anatomy

def test_liver_centroid_is_right_of_spleen_in_patient_space(abdomen):
    # LPS: x grows towards the patient's left
    assert centroid_mm(abdomen, "liver")[0] < centroid_mm(abdomen, "spleen")[0] - 80


@pytest.mark.parametrize("seed", [12, 13])
def test_kidneys_straddle_the_spine_behind_the_aorta(seed):
    phantom = make_phantom("abdomen-ct", seed, shape=(40, 72, 72), contrast_phase="arterial")
    right, left = centroid_mm(phantom, "right_kidney"), centroid_mm(phantom, "left_kidney")
    spine = spine_centre_mm(phantom, (right[2] - 40, left[2] + 40))
    assert right[0] < spine[0] - 30 and left[0] > spine[0] + 30
    assert right[2] < left[2]  # the right kidney sits lower, under the liver
    aorta = centroid_mm(phantom, "aorta")
    assert min(right[1], left[1]) > aorta[1]  # retroperitoneal, posterior to the aorta


def test_aorta_runs_left_anterior_of_the_spine_and_the_cava_to_its_right(abdomen):
    aorta, cava = centroid_mm(abdomen, "aorta"), centroid_mm(abdomen, "inferior_vena_cava")
    spine = spine_centre_mm(abdomen, (aorta[2] - 60, aorta[2] + 60))
    assert aorta[0] > spine[0] and aorta[1] < spine[1]
    assert cava[0] < aorta[0]


def test_pancreas_lies_between_the_kidneys_in_front_of_them(abdomen):
    pancreas = centroid_mm(abdomen, "pancreas")
    right, left = centroid_mm(abdomen, "right_kidney"), centroid_mm(abdomen, "left_kidney")
    assert right[0] < pancreas[0] < left[0]
    assert pancreas[1] < min(right[1], left[1])


def test_neighbouring_organs_touch(abdomen):
    labels = abdomen.labels.array
    grown_liver = ndi.binary_dilation(labels == 1)
    for neighbour in (7, 9, 3):  # gallbladder, inferior vena cava, right kidney
        assert (grown_liver & (labels == neighbour)).any(), LABELS["abdomen-ct"][neighbour]


def test_organ_volumes_are_adult_sized(abdomen):
    millilitres = {name: (abdomen.labels.array == value).sum() * abdomen.labels.voxel_volume_ml
                   for value, name in abdomen.label_names.items()}
    assert 700 < millilitres["liver"] < 2500
    assert 40 < millilitres["spleen"] < 500
    for kidney in ("right_kidney", "left_kidney"):
        assert 70 < millilitres[kidney] < 300


def test_heart_chambers_are_arranged_as_in_a_real_heart(heart):
    phantom = heart
    lv, rv = centroid_mm(phantom, "left_ventricle"), centroid_mm(phantom, "right_ventricle")
    la, ra = centroid_mm(phantom, "left_atrium"), centroid_mm(phantom, "right_atrium")
    assert rv[0] < lv[0] and rv[1] < lv[1]  # the right ventricle is right and anterior
    assert la[1] > lv[1] and la[2] > lv[2]  # the left atrium is posterior and above
    assert ra[0] < la[0]
    myocardium = phantom.labels.array == 1
    assert (ndi.binary_dilation(phantom.labels.array == 2) & myocardium).any()


# ----------------------------------------------------------------------------- body regions

def test_body_ct_labels_every_axial_slice_with_a_region_from_legs_up_to_the_neck():
    phantom = make_phantom("body-ct", 3, shape=SMALL["body-ct"])
    regions = phantom.slice_regions
    assert regions.shape == (phantom.image.array.shape[0],)
    assert np.all(np.diff(regions) <= 0)  # k runs inferior -> superior on the canonical grid
    names = {REGIONS[r] for r in regions}
    assert {"neck", "chest", "abdomen", "pelvis", "legs"} <= names
    liver_slices = np.nonzero((phantom.labels.array == 1).sum(axis=(1, 2)))[0]
    middle = liver_slices[len(liver_slices) // 2]
    assert REGIONS[regions[middle]] in ("abdomen", "chest")


def test_body_ct_regions_follow_the_slices_when_the_volume_is_flipped():
    phantom = make_phantom("body-ct", 7, shape=SMALL["body-ct"], random_orientation=True)
    z = phantom.image.index_to_physical(
        np.stack([np.zeros(96), np.zeros(96), np.arange(96)], axis=1))[:, 2]
    order = np.argsort(z)  # inferior to superior
    assert np.all(np.diff(phantom.slice_regions[order]) <= 0)
    assert make_phantom("abdomen-ct", 7, shape=(8, 8, 8)).slice_regions is None


# ----------------------------------------------------------------------------- errors and CLI

@pytest.mark.parametrize("arguments, message", [
    (dict(kind="lung-ct", seed=0), "unknown phantom kind"),
    (dict(kind="heart-mr", seed=0, contrast_phase="arterial"), "CT phantoms only"),
    (dict(kind="abdomen-ct", seed=0, contrast_phase="delayed"), "unknown contrast phase"),
    (dict(kind="abdomen-ct", seed=0, shape=(4, 64, 64)), "shape"),
    (dict(kind="abdomen-ct", seed=0, spacing=(1, 0, 1)), "spacing"),
    (dict(kind="abdomen-ct", seed=-1), "non-negative"),
])
def test_bad_arguments_raise_one_line_input_errors(arguments, message):
    kind, seed = arguments.pop("kind"), arguments.pop("seed")
    with pytest.raises(InputError, match=message) as error:
        make_phantom(kind, seed, **arguments)
    assert "\n" not in str(error.value)


def test_phantom_command_writes_image_and_labels_on_the_same_grid(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="deeporganseg")
    phantom_command.add_parser(parser.add_subparsers(dest="command"))
    image_path, label_path = tmp_path / "ct.nii.gz", tmp_path / "ct_labels.nii.gz"
    args = parser.parse_args(["phantom", "--kind", "abdomen-ct", "--seed", "2", "--out",
                              str(image_path), "--labels", str(label_path), "--shape", "24", "32",
                              "32", "--phase", "arterial", "--oblique"])
    assert args.handler(args, lambda stage, fraction, message="": None, None) == 0
    image, labels = read_volume(image_path), read_volume(label_path)
    expected = make_phantom("abdomen-ct", 2, shape=(24, 32, 32), contrast_phase="arterial",
                            random_orientation=True)
    np.testing.assert_array_equal(labels.array, expected.labels.array)
    np.testing.assert_allclose(image.direction, expected.image.direction, atol=1e-6)
    np.testing.assert_allclose(image.origin, expected.image.origin, atol=1e-4)
    assert "abdomen-ct" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz", "ct_labels.nii.gz"]


def test_phantom_command_refuses_a_missing_output_folder(tmp_path):
    parser = argparse.ArgumentParser(prog="deeporganseg")
    phantom_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phantom", "--kind", "heart-mr", "--out",
                              str(tmp_path / "no" / "a.nii"), "--labels", str(tmp_path / "b.nii")])
    with pytest.raises(InputError, match="does not exist"):
        args.handler(args)


# ---------------------------------------------------------------------------------------------
# Realism against the real CT and published values (docs/phantoms.md, "Phantom vs patient").

MANY_SEEDS = range(30, 38)


@pytest.fixture(scope="module")
def many_abdomens() -> list[Phantom]:
    return [make_phantom("abdomen-ct", seed, shape=(56, 112, 112), contrast_phase="portal-venous")
            for seed in MANY_SEEDS]


def test_spleen_volume_lies_in_the_adult_range_over_many_seeds(many_abdomens):
    """Adult spleens hold about 0.1-0.5 L (docs/phantoms.md); the old ellipsoid was 0.07-0.12 L."""
    volumes = [(p.labels.array == 2).sum() * p.labels.voxel_volume_ml for p in many_abdomens]
    assert all(80 <= v <= 550 for v in volumes), volumes
    assert np.median(volumes) >= 150, volumes


def _median_axial_diameter_mm(phantom: Phantom, value: int) -> float:
    """Equivalent diameter (mm) of a label's median axial cross-section."""
    sx, sy, _ = phantom.labels.spacing
    areas = (phantom.labels.array == value).sum(axis=(1, 2)) * sx * sy
    return float(2.0 * np.sqrt(np.median(areas[areas > 0]) / np.pi))


def test_great_vessel_calibres_lie_in_the_adult_ranges_over_many_seeds(many_abdomens):
    """Aorta 19-30 mm at the diaphragm narrowing to 15-22 mm above the bifurcation, the cava
    14-25 mm (docs/phantoms.md, sources 8-9); measured on coarse voxels, so with a margin."""
    aortas = [_median_axial_diameter_mm(p, 8) for p in many_abdomens]
    cavas = [_median_axial_diameter_mm(p, 9) for p in many_abdomens]
    assert all(14 <= d <= 34 for d in aortas), aortas
    assert all(11 <= d <= 29 for d in cavas), cavas
    assert max(aortas) - min(aortas) > 3  # patients differ


def test_spleen_lies_against_the_left_posterolateral_wall_behind_the_aorta(many_abdomens):
    for phantom in many_abdomens:
        spleen, aorta = centroid_mm(phantom, "spleen"), centroid_mm(phantom, "aorta")
        liver = centroid_mm(phantom, "liver")
        assert spleen[0] > aorta[0] + 60  # far to the patient's left
        assert spleen[1] > aorta[1] - 10  # not in front of the aorta: against the back ribs
        assert spleen[0] - liver[0] > 120


def test_the_spleen_upper_part_lies_above_the_left_kidney(many_abdomens):
    """The left kidney meets the lower part of the spleen (its renal impression); the spleen's
    bulky upper pole lies above the kidney, beside the crus, where a thin upper-abdomen scan
    shows spleen and no kidney (docs/phantoms.md, "Spleen and kidney"). Before, 0-16 % of the
    spleen lay above the kidney's upper pole and a network called that part of a patient's
    spleen kidney."""
    shares = []
    for phantom in many_abdomens:
        labels = phantom.labels.array
        spleen, kidney = labels == 2, labels == 4
        if not kidney.any():
            continue  # the one-kidney variant
        kidney_top = np.nonzero(kidney.any(axis=(1, 2)))[0].max()  # k grows superior (LPS)
        shares.append(spleen[kidney_top + 1:].sum() / spleen.sum())
    assert np.median(shares) >= 0.25 and min(shares) >= 0.08, shares


def test_the_lung_ends_above_the_costodiaphragmatic_recess(many_abdomens):
    """Behind, the lung's lower border lies about two vertebrae below its dome (T10 in quiet
    breathing) and the recess below it, down to the pleural reflection at T12, holds no lung:
    the organs under the diaphragm reach the chest wall there (docs/phantoms.md, "What fills
    the gutter"). Before, the lung filled the recess down to the diaphragm, 92-110 mm below
    the liver's top, and no phantom's left paravertebral gutter looked like a patient's."""
    depths = []
    for phantom in many_abdomens:
        liver_levels = np.nonzero((phantom.labels.array == 1).any(axis=(1, 2)))[0]
        lung_levels = np.nonzero(tissue_mask(phantom, "lung").any(axis=(1, 2)))[0]
        depths.append((liver_levels.max() - lung_levels.min()) * phantom.labels.spacing[2])
    assert all(25.0 <= depth <= 85.0 for depth in depths), depths
    assert max(depths) - min(depths) > 15.0, depths  # deeper in inspiration


def test_a_supine_stomach_holds_gas_in_its_body_not_only_its_antrum(many_abdomens):
    """Swallowed air rises to the anterior wall of the stomach's body as well as of its antrum,
    each above its own air-fluid level (docs/phantoms.md, "The stomach's gas"). Before, one
    level for the whole J filled the antrum only, and at the upper half of the spleen's levels
    (where the real CT's slab lies) the stomach held 0-10 % gas; the network then called a
    patient's gas-filled body background."""
    shares = []
    for phantom in many_abdomens:
        labels = phantom.labels.array
        stomach, gas = labels == 5, tissue_mask(phantom, "gas") & (labels == 5)
        spleen_levels = np.nonzero((labels == 2).any(axis=(1, 2)))[0]
        upper = slice(int(np.median(spleen_levels)), int(spleen_levels.max()) + 1)
        if stomach[upper].any():
            shares.append(gas[upper].sum() / stomach[upper].sum())
    assert len(shares) >= len(many_abdomens) - 1, shares
    assert np.median(shares) >= 0.05 and max(shares) >= 0.25, shares


def test_arms_at_the_sides_and_the_ct_table_appear_in_some_cases(many_abdomens):
    with_arms = [p for p in many_abdomens if p.info["arms_down"]]
    assert 0 < len(with_arms) < len(many_abdomens)
    for phantom in many_abdomens:
        assert tissue_mask(phantom, "table").any()  # every CT lies on a table
    for phantom in with_arms:
        body = phantom.tissues.array > 0
        columns = np.nonzero(body.any(axis=(0, 1)))[0]
        trunk = np.nonzero(tissue_mask(phantom, "liver", "spleen").any(axis=(0, 1)))[0]
        assert columns.min() < trunk.min() - 10 and columns.max() > trunk.max() + 10


# ---------------------------------------------------------------------------------------------
# Variants and findings (docs/phantoms.md, "Variants").

#: The organs each variant may change (DeepOrganSegLib/phantoms/variants.py).
VARIANT_ORGANS = {"splenomegaly": ("spleen",), "hepatomegaly": ("liver",),
                  "no_gallbladder": ("gallbladder",), "no_right_kidney": ("right_kidney",),
                  "no_left_kidney": ("left_kidney",),
                  "renal_cysts": ("right_kidney", "left_kidney"),
                  "ascites": (), "surgical_clips": (), "spinal_fixation": (),
                  "aortic_calcification": ("aorta",)}


@pytest.mark.parametrize("seed", [2, 5, 13, 35])  # each variant at least once in these four
def test_variants_change_only_their_organs_and_keep_the_rest_of_the_body(seed):
    varied = make_phantom("abdomen-ct", seed, shape=(48, 56, 56))
    textbook = make_phantom("abdomen-ct", seed, shape=(48, 56, 56), variants=False)
    assert varied.info["variants"] and textbook.info["variants"] == []
    values = {name: value for value, name in LABELS["abdomen-ct"].items()}
    allowed = np.zeros(varied.labels.array.shape, bool)
    for variant in varied.info["variants"]:
        for organ in VARIANT_ORGANS[variant]:
            allowed |= (varied.labels.array == values[organ]) | \
                (textbook.labels.array == values[organ])
    changed = varied.labels.array != textbook.labels.array
    assert changed.any() and not (changed & ~allowed).any()


def test_a_case_without_variants_is_the_textbook_body_bit_for_bit():
    varied = make_phantom("abdomen-ct", 1, shape=(48, 56, 56))
    textbook = make_phantom("abdomen-ct", 1, shape=(48, 56, 56), variants=False)
    assert varied.info["variants"] == []
    assert np.array_equal(varied.image.array, textbook.image.array)
    assert np.array_equal(varied.labels.array, textbook.labels.array)


def test_absent_organs_are_absent_and_enlarged_ones_enlarged():
    values = {name: value for value, name in LABELS["abdomen-ct"].items()}
    shape = (56, 112, 112)

    def millilitres(phantom, organ):
        return (phantom.labels.array == values[organ]).sum() * phantom.labels.voxel_volume_ml

    for seed, variant, organ in ((3, "no_gallbladder", "gallbladder"),
                                 (35, "no_right_kidney", "right_kidney")):
        case = make_phantom("abdomen-ct", seed, shape=shape)
        assert variant in case.info["variants"] and millilitres(case, organ) == 0
        assert millilitres(make_phantom("abdomen-ct", seed, shape=shape, variants=False),
                           organ) > 5
    for seed in (5, 21):  # splenomegaly: beyond the adult range of 0.1-0.5 L
        case = make_phantom("abdomen-ct", seed, shape=shape)
        assert "splenomegaly" in case.info["variants"]
        assert 450 <= millilitres(case, "spleen") <= 1200
    for seed in (13, 16):  # hepatomegaly: beyond about 1.8 L
        case = make_phantom("abdomen-ct", seed, shape=shape)
        normal = make_phantom("abdomen-ct", seed, shape=shape, variants=False)
        assert "hepatomegaly" in case.info["variants"]
        assert millilitres(case, "liver") >= 1.3 * millilitres(normal, "liver")


def test_variants_are_drawn_at_their_documented_prevalences():
    drawn = [variants_module.draw_variants(np.random.default_rng(seed)).names()
             for seed in range(4000)]
    share = {name: np.mean([name in names for names in drawn])
             for name in ("splenomegaly", "hepatomegaly", "no_gallbladder", "renal_cysts")}
    assert share["splenomegaly"] == pytest.approx(variants_module.SPLENOMEGALY, abs=0.02)
    assert share["hepatomegaly"] == pytest.approx(variants_module.HEPATOMEGALY, abs=0.02)
    assert share["no_gallbladder"] == pytest.approx(variants_module.NO_GALLBLADDER, abs=0.02)
    assert share["renal_cysts"] == pytest.approx(variants_module.RENAL_CYSTS, abs=0.03)
    one_kidney = np.mean([any(n.startswith("no_") and n.endswith("kidney") for n in names)
                          for names in drawn])
    assert one_kidney == pytest.approx(variants_module.ONE_KIDNEY, abs=0.01)


#: The tissue each finding paints (it replaces unlabelled tissue only).
FINDING_TISSUES = {"ascites": "ascites", "spinal_fixation": "metal"}


@pytest.mark.parametrize("seed, finding", [(66, "ascites"), (26, "spinal_fixation")])
def test_findings_change_the_image_and_never_the_labels(seed, finding):
    case = make_phantom("abdomen-ct", seed, shape=(48, 80, 80))
    textbook = make_phantom("abdomen-ct", seed, shape=(48, 80, 80), variants=False)
    assert case.info["variants"] == [finding]
    assert np.array_equal(case.labels.array, textbook.labels.array)
    tissue = TISSUE_ID[FINDING_TISSUES[finding]]
    assert (case.tissues.array == tissue).any() and not (textbook.tissues.array == tissue).any()
    assert not np.array_equal(case.image.array, textbook.image.array)


@pytest.mark.parametrize("seed", [5, 10002])  # both with calcified plaques
def test_the_aorta_label_holds_its_wall_and_its_calcified_plaques(seed):
    case = make_phantom("abdomen-ct", seed, contrast_phase="portal-venous")
    textbook = make_phantom("abdomen-ct", seed, contrast_phase="portal-venous", variants=False)
    assert "aortic_calcification" in case.info["variants"]
    aorta = case.labels.array == 8
    tissues = case.tissues.array
    # the wall: soft tissue labelled as the aorta, around the contrast-filled lumen
    wall = aorta & (tissues == TISSUE_ID["muscle"])
    lumen = aorta & (tissues == TISSUE_ID["arterial_blood"])
    assert wall.sum() > 0.1 * lumen.sum()
    assert float(np.median(case.image.array[lumen])) > 120.0  # HU: contrast-filled
    # plaques: calcium-dense voxels inside the label, brighter than any lumen voxel of the
    # case without them
    plaque = aorta & (tissues == TISSUE_ID["bone_cortical"])
    assert plaque.any() and not (textbook.tissues.array[textbook.labels.array == 8]
                                 == TISSUE_ID["bone_cortical"]).any()
    assert case.image.array[aorta].max() > textbook.image.array[textbook.labels.array == 8].max() + 100


def test_ascites_is_water_dense_free_fluid_against_the_liver():
    case = make_phantom("abdomen-ct", 11, contrast_phase="portal-venous")
    fluid = case.tissues.array == TISSUE_ID["ascites"]
    assert fluid.sum() * case.labels.voxel_volume_ml >= 20.0  # mL
    assert not case.labels.array[fluid].any()  # in no organ
    assert -15.0 <= float(np.median(case.image.array[fluid])) <= 45.0  # HU: water, not fat
    liver = case.labels.array == 1
    assert (ndi.binary_dilation(liver, iterations=2) & fluid).any()  # perihepatic


@pytest.mark.parametrize("seed", [10030, 10044, 10126])
def test_surgical_clips_show_as_metal_beside_the_liver_on_a_coarse_grid(seed):
    # 1 mm clips fell between the voxel centres of a 3-4 mm grid and were never in the image
    case = make_phantom("abdomen-ct", seed, shape=(64, 96, 96))
    assert "surgical_clips" in case.info["variants"]
    metal = case.tissues.array == TISSUE_ID["metal"]
    assert metal.any() and not case.labels.array[metal].any()
    from_liver = ndi.distance_transform_edt(case.labels.array != 1,
                                            sampling=case.image.spacing[::-1])
    assert float(from_liver[metal].max()) < 30.0  # mm: in the gallbladder fossa
    assert float(case.image.array[metal].min()) > 500.0  # HU: brighter than any contrast


def test_metal_streaks_radiate_from_pedicle_screws():
    case = make_phantom("abdomen-ct", 26, contrast_phase="portal-venous")
    textbook = make_phantom("abdomen-ct", 26, contrast_phase="portal-venous", variants=False)
    metal = case.tissues.array == TISSUE_ID["metal"]
    k = int(np.argmax(metal.sum(axis=(1, 2))))
    spacing = case.image.spacing
    from_metal = ndi.distance_transform_edt(~metal[k], sampling=(spacing[1], spacing[0]))
    same_tissue = case.tissues.array[k] == textbook.tissues.array[k]
    ring = (from_metal > 15.0) & (from_metal < 45.0) & same_tissue & \
        (textbook.image.array[k] > -500)
    difference = case.image.array[k][ring] - textbook.image.array[k][ring]
    assert ring.sum() > 100 and float(difference.std()) > 30.0  # HU: bright and dark streaks
    far = (from_metal > 150.0) & same_tissue
    assert np.abs(case.image.array[k][far] - textbook.image.array[k][far]).mean() < 5.0


def test_beam_hardening_darkens_the_line_between_two_large_bones_only():
    grid = Grid.centred((3, 100, 100), np.array([2.0, 2.0, 2.0]), np.zeros(3))
    x, y = np.meshgrid(grid.axes()[0], grid.axes()[1])
    tissue = np.full((3, 100, 100), TISSUE_ID["muscle"], np.uint8)
    for cx in (-50.0, 50.0):  # two femoral heads, 20 mm radius
        tissue[:, (x - cx) ** 2 + y ** 2 < 400] = TISSUE_ID["bone_cortical"]
    image = np.full(tissue.shape, 50.0, np.float32)
    # the scans whose reconstruction leaves bands (BEAM_HARDENING_SHARE of them) differ at all
    outputs = (add_dense_object_artefacts(image, tissue, grid, np.random.default_rng(seed))
               for seed in range(100))
    out = next(o for o in outputs if not np.array_equal(o, image))
    between = (np.abs(x) < 20) & (np.abs(y) < 2)
    beside = (np.abs(x) < 20) & (np.abs(y) > 40)
    assert float((out - image)[1][between].mean()) < -5.0  # HU
    assert np.allclose(out[1][beside], image[1][beside], atol=0.01)  # HU


def test_beam_hardening_appears_in_its_documented_share_of_scans():
    grid = Grid.centred((1, 40, 40), np.array([2.0, 2.0, 2.0]), np.zeros(3))
    tissue = np.full((1, 40, 40), TISSUE_ID["muscle"], np.uint8)
    tissue[:, 5:15, 5:15] = tissue[:, 25:35, 25:35] = TISSUE_ID["bone_cortical"]
    image = np.zeros(tissue.shape, np.float32)
    banded = [not np.array_equal(image, add_dense_object_artefacts(
        image, tissue, grid, np.random.default_rng(seed))) for seed in range(1000)]
    assert np.mean(banded) == pytest.approx(BEAM_HARDENING_SHARE, abs=0.05)


def test_findings_and_oral_contrast_are_drawn_at_their_documented_prevalences():
    drawn = [variants_module.draw_variants(np.random.default_rng(seed)) for seed in range(4000)]
    assert np.mean([v.ascites_mm > 0 for v in drawn]) == pytest.approx(variants_module.ASCITES,
                                                                       abs=0.015)
    assert all(v.surgical_clips == 0 for v in drawn if v.gallbladder)
    after_cholecystectomy = [v.surgical_clips > 0 for v in drawn if not v.gallbladder]
    assert np.mean(after_cholecystectomy) == pytest.approx(
        variants_module.CLIPS_AFTER_CHOLECYSTECTOMY, abs=0.08)
    assert np.mean([v.fixation_levels > 0 for v in drawn]) == pytest.approx(
        variants_module.SPINAL_FIXATION, abs=0.01)
    contrast = [tissue_means("abdomen-ct", "portal-venous", np.random.default_rng(seed))
                for seed in range(1000)]
    flagged = [means[TISSUE_ID["bowel_content"]] for means, _, info in contrast
               if info["bowel_contrast"]]
    assert len(flagged) / len(contrast) == pytest.approx(BOWEL_CONTRAST_SHARE, abs=0.04)
    assert min(flagged) >= 150.0  # HU: positive oral contrast
