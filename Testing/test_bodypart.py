"""Body-part recognition and task Auto (issue 8): specifications of DeepOrganSegLib.bodypart."""

from __future__ import annotations

import json
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import torch
from helpers import TINY_CONFIG, ellipsoid_scene, tiny_metadata
from DeepOrganSegLib.bodypart import REGIONS
from DeepOrganSegLib.bodypart import classifier as bodypart_classifier
from DeepOrganSegLib.bodypart.classifier import bundled_classifier, load_classifier
from DeepOrganSegLib.bodypart.profile import (AutoChoice, RegionProfile, RegionRange,
                                              auto_choice, choose_auto_task, region_profile,
                                              viterbi_profile)
from DeepOrganSegLib.model import LoadedModel
from DeepOrganSegLib.cli import main
from DeepOrganSegLib.resources import default_model_path
from DeepOrganSegLib.errors import InputError, ModelFileError
from DeepOrganSegLib.model.network import DSN3D
from DeepOrganSegLib.phantoms import make_phantom
from DeepOrganSegLib.progress import AutoTaskNote
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from DeepOrganSegLib.volume import Volume
from DeepOrganSegLib.volume_io import write_volume

ALL_TASKS = ("abdomen-ct", "heart-mr", "brain-mr")
INVESALIUS = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


@pytest.fixture(scope="module")
def classifier():
    found = bundled_classifier()
    if found is None:
        pytest.skip(f"{bodypart_classifier.CLASSIFIER_FILE} not trained yet "
                    f"(training/train_bodypart.py)")
    return found


@pytest.fixture(scope="module")
def whole_body():
    """A held-out whole-body CT phantom (seed outside the training and test ranges), stored
    with a random axial orientation."""
    return make_phantom("body-ct", 9001, random_orientation=True)


def _profile(modality: str, *names: str) -> RegionProfile:
    ranges = tuple(RegionRange(name, -100.0 * i, -100.0 * (i + 1), None, None)
                   for i, name in enumerate(names))
    return RegionProfile(modality, 0.99, ranges, np.zeros(0, int), np.zeros(0))


# ---------------------------------------------------------------------------- profile smoothing


def test_region_profile_is_contiguous_and_ordered():
    log_p = np.log(np.random.default_rng(0).dirichlet(np.ones(len(REGIONS)), size=300))
    labels = viterbi_profile(log_p)
    steps = np.diff(labels)
    assert set(steps.tolist()) <= {0, 1}


def test_profile_smoothing_corrects_isolated_slice_errors():
    truth = np.repeat([1, 2, 3, 4], 25)
    rng = np.random.default_rng(1)
    probabilities = np.full((truth.size, len(REGIONS)), 0.02)
    probabilities[np.arange(truth.size), truth] = 0.9
    inner = np.nonzero(np.isin(np.arange(truth.size) % 25, np.arange(3, 22)))[0]
    wrong = rng.choice(inner, 15, replace=False)  # 15 % of slices confidently wrong
    probabilities[wrong] = 0.02
    probabilities[wrong, rng.integers(0, len(REGIONS), wrong.size)] = 0.9
    np.testing.assert_array_equal(viterbi_profile(np.log(probabilities)), truth)


# ---------------------------------------------------------------------------- task choice rule


@pytest.mark.parametrize("modality, regions, task", [
    ("MR", ("head",), "brain-mr"),
    ("MR", ("neck", "chest"), "heart-mr"),
    ("CT", ("chest", "abdomen", "pelvis"), "abdomen-ct"),
    ("CT", ("neck", "chest"), "abdomen-ct"),
])
def test_auto_task_rule(modality, regions, task):
    assert choose_auto_task(_profile(modality, *regions), ALL_TASKS) == task


def test_auto_refuses_volumes_no_task_fits_and_says_what_it_saw():
    with pytest.raises(InputError, match="CT head..neck.*abdomen-ct, heart-mr, brain-mr"):
        choose_auto_task(_profile("CT", "head", "neck"), ALL_TASKS)
    with pytest.raises(InputError, match="needs task brain-mr, which this model lacks"):
        choose_auto_task(_profile("MR", "head"), ("abdomen-ct",))


# ---------------------------------------------------------------------------- the classifier


def test_classifier_file_is_beside_the_model_but_never_taken_for_a_segmentation_model():
    path = bodypart_classifier.default_classifier_path()
    if path is None:
        pytest.skip("classifier not trained yet")
    assert path.parent.name == "Models" and path.suffix != ".safetensors"
    assert path.stat().st_size < 2_000_000
    try:
        assert default_model_path() != path
    except InputError:
        pass  # no segmentation model bundled


def test_corrupt_classifier_metadata_is_refused_with_the_field_named(classifier, tmp_path):
    raw = classifier.path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    document = json.loads(header["__metadata__"]["deeporganseg"])
    document["regions"] = ["head", "torso"]
    header["__metadata__"]["deeporganseg"] = json.dumps(document)
    encoded = json.dumps(header).encode()
    broken = tmp_path / "broken.bodypart"
    broken.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:])
    with pytest.raises(ModelFileError, match="'regions'"):
        load_classifier(broken)


def test_whole_body_ct_phantom_regions_match_the_truth(classifier, whole_body):
    profile = region_profile(whole_body.image, classifier)
    assert profile.modality == "CT"
    names = [name for name in REGIONS if name in profile.names]
    assert list(profile.names) == names  # top down, in anatomical order
    truth = whole_body.slice_regions
    predicted = np.full(truth.shape, -1)
    for region in profile.regions:
        predicted[region.first_slice:region.last_slice + 1] = REGIONS.index(region.name)
    assert (predicted == truth).mean() > 0.9


def test_auto_picks_abdomen_ct_for_whole_body_ct(classifier, whole_body):
    choice = auto_choice(whole_body.image, ALL_TASKS, classifier)
    assert choice.task == "abdomen-ct"
    aorta = next(v for v, name in whole_body.label_names.items() if name == "aorta")
    abdominal = whole_body.labels.array.copy()
    chest = whole_body.slice_regions <= REGIONS.index("chest")
    abdominal[chest & (abdominal == aorta).any(axis=(1, 2))] = 0  # the thoracic aorta is not
    organ_slices = np.nonzero(abdominal.any(axis=(1, 2)))[0]  # part of the abdominal task
    assert choice.slab.start <= organ_slices.min() and organ_slices.max() < choice.slab.stop
    assert choice.slab.stop - choice.slab.start < 0.7 * whole_body.image.array.shape[0]
    assert choice.summary().startswith("auto: CT, regions ")
    assert "task abdomen-ct, slab slices" in choice.summary()
    assert choice.summary().auto_task == "abdomen-ct"  # the JSON line's own field


def test_auto_refuses_ct_of_the_legs_alone(classifier, whole_body):
    image = whole_body.image
    ni, nj, nk = image.size
    z = image.index_to_physical(np.stack([np.full(nk, ni / 2), np.full(nk, nj / 2),
                                          np.arange(nk)], 1))[:, 2]
    is_legs = whole_body.slice_regions == REGIONS.index("legs")
    legs = np.nonzero(is_legs & (z < z[is_legs].max() - 50))[0]  # thighs, 5 cm below the pelvis
    origin = image.index_to_physical(np.array([0.0, 0.0, float(legs.min())]))
    crop = Volume(image.array[legs.min():legs.max() + 1], image.spacing, tuple(origin),
                  image.direction)
    with pytest.raises(InputError, match="shows CT .*legs"):
        auto_choice(crop, ALL_TASKS, classifier)


# ---------------------------------------------------------------------------- real images


def _invesalius_head_ct() -> Volume:
    """The real head CT of Debian's invesalius-examples (int16 HU, 108 x 256 x 256)."""
    with tarfile.open(INVESALIUS) as archive:
        members = {Path(m.name).name: m for m in archive.getmembers()}
        info = plistlib.loads(archive.extractfile(members["main.plist"]).read())
        raw = archive.extractfile(members[info["matrix"]["filename"]]).read()
    matrix = info["matrix"]
    array = np.frombuffer(raw, dtype=matrix["dtype"]).reshape(matrix["shape"])
    return Volume(array.astype(np.float32), tuple(info["spacing"]))


@pytest.mark.skipif(not INVESALIUS.is_file(), reason="Debian package invesalius-examples absent")
def test_real_head_ct_is_classified_as_head_or_neck_ct(classifier):
    profile = region_profile(_invesalius_head_ct(), classifier)
    assert profile.modality == "CT"
    assert set(profile.names) <= {"head", "neck"}


def test_real_icbm152_t1_is_classified_as_head_mr(classifier, tmp_path):
    datasets = pytest.importorskip("nilearn.datasets")
    path = tmp_path / "icbm152_t1.nii.gz"
    datasets.load_mni152_template(resolution=1).to_filename(str(path))
    volume = Volume.from_sitk(sitk.ReadImage(str(path), sitk.sitkFloat32))
    profile = region_profile(volume, classifier)
    assert (profile.modality, profile.names) == ("MR", ("head",))
    assert choose_auto_task(profile, ALL_TASKS) == "brain-mr"


# ---------------------------------------------------------------------------- wiring


def test_auto_slab_is_segmented_and_pasted_onto_the_full_input_grid(monkeypatch):
    """The slab step itself, with a fixed Auto choice (the classifier is tested above) and an
    untrained network (only the bookkeeping matters here)."""
    import DeepOrganSegLib.segment as segment

    torch.manual_seed(0)
    model = LoadedModel(DSN3D(TINY_CONFIG).eval(), tiny_metadata(), Path("untrained"))
    image, _ = ellipsoid_scene(3)
    slab = slice(8, 32)
    choice = AutoChoice("abdomen-ct", _profile("CT", "chest", "abdomen"), slab)
    monkeypatch.setattr(segment, "_choose_task", lambda volume, metadata, requested: (
        metadata.tasks[0], choice if requested == "auto" else None))
    messages = []
    result = segment_volume(image, model, SegmentationOptions(task="auto", crf=False),
                            progress=lambda stage, fraction, message="": messages.append(message))
    assert result.labels.array.shape == image.array.shape
    assert result.labels.origin == image.origin and result.labels.spacing == image.spacing
    assert not result.labels.array[:slab.start].any() and not result.labels.array[slab.stop:].any()
    origin = image.index_to_physical(np.array([0.0, 0.0, float(slab.start)]))
    cropped = Volume(image.array[slab], image.spacing, tuple(origin), image.direction)
    alone = segment_volume(cropped, model, SegmentationOptions(task="abdomen-ct", crf=False))
    np.testing.assert_array_equal(result.labels.array[slab], alone.labels.array)
    assert "auto: CT, regions chest..abdomen, task abdomen-ct, slab slices 8-31" in messages
    assert [m.auto_task for m in messages if isinstance(m, AutoTaskNote)] == ["abdomen-ct"]
    assert sum(s.voxels for s in result.statistics) == np.count_nonzero(result.labels.array)


def test_regions_command_prints_json(classifier, whole_body, tmp_path, capsys):
    path = tmp_path / "body.nii.gz"
    write_volume(whole_body.image, path)
    assert main(["regions", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["modality"] == "CT" and document["auto_task"] == "abdomen-ct"
    assert {"region", "first_slice", "last_slice", "z_top_mm", "z_bottom_mm"} <= set(
        document["regions"][0])
    assert main(["regions", str(path)]) == 0
    assert "auto task: abdomen-ct" in capsys.readouterr().out
