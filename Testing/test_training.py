"""The training package: label space, masked multi-task loss, data readers and sampler, training
steps, bit-identical resume, and export to a model file the engine segments with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from DeepOrganSegLib.model import TaskSpec, load_model, read_metadata, save_model
from DeepOrganSegLib.model.network import DSN3D
from DeepOrganSegLib.grid import working_grid
from DeepOrganSegLib.preprocess import prepare_image
from DeepOrganSegLib.options import SegmentationOptions
from DeepOrganSegLib.segment import segment_volume
from training.config import TrainConfig, apply_overrides, load_config
from training.data import (CaseCache, PatchBatchDataset, list_cases, load_case,
                           read_msd_folder, read_nnunet_folder, sample_patch,
                           shift_label_intensities, working_arrays)
from training.distributed import DistributedContext
from training.export import export_checkpoint, main as export_main
from training.losses import (MarginalDiceCELoss, merge_unlabelled,
                             side_output_weights)
import training.train as train_module
from training.train import Checkpoint, lr_factor, train

pytest.importorskip("DeepOrganSegLib.phantoms")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "training" / "configs" / "tiny.yaml"
CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory) -> Path:
    """One cache of the tiny config's pre-processed phantoms for the whole session."""
    folder = tmp_path_factory.mktemp("cache")
    config = tiny_config(folder, folder)
    cache = CaseCache(folder, config)
    for task in config.tasks:
        for case in list_cases(task, "train") + list_cases(task, "val"):
            cache.ensure(case)
    return folder


def tiny_config(cache: Path, output: Path, *overrides: str) -> TrainConfig:
    return load_config(TINY, [f"data.cache_dir={cache}", f"output_dir={output}", *overrides])


# ---------------------------------------------------------------------------------------------
# Configuration and label space.


def test_union_label_space_gives_one_channel_per_name():
    config = load_config(ROOT / "training" / "configs" / "bundled.yaml")
    abdomen, heart = config.task("abdomen-ct"), config.task("heart-mr")
    assert config.num_classes == len(config.labels) + 1 == 19
    # "aorta" is labelled by both tasks: one channel.
    assert (config.task_channels(abdomen)[abdomen.labels.index("aorta") + 1]
            == config.task_channels(heart)[heart.labels.index("aorta") + 1])
    assert config.dsn_config().num_classes == 19


def test_command_line_overrides_nested_entries():
    raw = apply_overrides({"optimizer": {"lr": 0.1}}, ["optimizer.lr=0.002", "schedule.steps=7"])
    assert raw == {"optimizer": {"lr": 0.002}, "schedule": {"steps": 7}}


def test_a_task_label_outside_the_union_is_refused():
    with pytest.raises(ValueError, match="not in 'labels'"):
        load_config(TINY, ["labels=[liver]"])


# ---------------------------------------------------------------------------------------------
# Losses.


def test_masked_loss_ignores_organs_the_task_never_labels():
    """On an abdomen CT, background predicted as 'left_ventricle' (a heart label) costs exactly
    what background predicted as background costs; predicted as 'liver', it costs more."""
    channels = {"abdomen-ct": [0, 1, 2], "heart-mr": [0, 3, 4]}  # 1 liver, 3 left_ventricle
    loss = MarginalDiceCELoss(channels)
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    target[:, :2] = 1  # half liver, half background

    def logits(background_channel: int) -> torch.Tensor:
        out = torch.full((1, 5, 4, 4, 4), -4.0)
        out[:, 1, :2] = 4.0                       # liver where liver is
        out[:, background_channel, 2:] = 4.0      # the background half
        return out

    as_background = loss(logits(0), target, ["abdomen-ct"])
    as_heart = loss(logits(3), target, ["abdomen-ct"])
    as_liver = loss(logits(1), target, ["abdomen-ct"])
    assert torch.allclose(as_background, as_heart, atol=1e-6)
    assert as_liver > as_background + 0.5


def test_merged_background_probability_is_the_sum_of_unlabelled_channels():
    logits = torch.randn(2, 6, 3, 3, 3)
    merged = merge_unlabelled(logits, [0, 2, 5])
    p, q = torch.softmax(logits, 1), torch.softmax(merged, 1)
    assert torch.allclose(q[:, 0], p[:, [0, 1, 3, 4]].sum(1), atol=1e-6)
    assert torch.allclose(q[:, 1:], p[:, [2, 5]], atol=1e-6)


def test_side_output_weights_decay_to_zero_and_learning_rate_warms_up_then_decays():
    assert side_output_weights((0.4, 0.2), 0, 100, "linear") == [0.4, 0.2]
    assert side_output_weights((0.4, 0.2), 100, 100, "linear") == [0.0, 0.0]
    assert side_output_weights((0.4,), 50, 100, "exponential")[0] == pytest.approx(0.04)
    assert side_output_weights((0.4,), 99, 100, "fixed") == [0.4]
    assert lr_factor(0, 10, 100, 0.9) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100, 0.9) == 1.0
    assert lr_factor(100, 10, 100, 0.9) == 0.0


# ---------------------------------------------------------------------------------------------
# Data.


def _write_case(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    labels = np.zeros((12, 14, 16), np.uint8)
    labels[3:8, 4:10, 5:11] = 1
    labels[8:10, 2:5, 2:5] = 2
    image = (rng.normal(0, 5, labels.shape) + 100 * labels).astype(np.float32)
    paths = []
    for array, path in ((image, folder / "imagesTr" / name[0]), (labels, folder / "labelsTr" / name[1])):
        path.parent.mkdir(parents=True, exist_ok=True)
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((2.0, 2.0, 3.0))
        sitk.WriteImage(itk, str(path))
        paths.append(path)
    return paths[0], paths[1]


def test_msd_folder_reader(tmp_path):
    for n in range(3):
        _write_case(tmp_path, (f"liver_{n}.nii.gz", f"liver_{n}.nii.gz"), n)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "liver", "2": "tumour"}, "modality": {"0": "CT"},
        "training": [{"image": f"./imagesTr/liver_{n}.nii.gz",
                      "label": f"./labelsTr/liver_{n}.nii.gz"} for n in range(3)]}))
    cases, names = read_msd_folder(tmp_path)
    assert [c[0] for c in cases] == ["liver_0", "liver_1", "liver_2"]
    assert names == {1: "liver", 2: "tumour"}
    assert all(image.exists() and label.exists() for _, image, label in cases)


def test_nnunet_folder_reader_and_label_mapping_into_the_union(tmp_path):
    for n in range(3):
        _write_case(tmp_path, (f"case_{n:03d}_0000.nii.gz", f"case_{n:03d}.nii.gz"), n)
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1, "tumour": 2},
        "numTraining": 3, "file_ending": ".nii.gz"}))
    cases, names = read_nnunet_folder(tmp_path)
    assert [c[0] for c in cases] == ["case_000", "case_001", "case_002"]
    assert names == {1: "spleen", 2: "tumour"}

    source = {"type": "nnunet", "path": str(tmp_path), "val_cases": 1,
              "rename": {"tumour": "background"}}
    document = load_config(TINY).to_dict()
    document["tasks"][0]["sources"] = [source]
    config = TrainConfig.from_dict(document)
    task = config.task("abdomen-ct")
    train_cases, val_cases = list_cases(task, "train"), list_cases(task, "val")
    assert [c.case_id for c in train_cases] == ["case_000", "case_001"]
    assert [c.case_id for c in val_cases] == ["case_002"]
    x, y = working_arrays(*load_case(train_cases[0]), task, config)
    assert x.dtype == np.float32 and y.dtype == np.uint8
    # spleen -> its union value; "tumour", renamed to background, is not learnt.
    assert set(np.unique(y)) == {0, config.label_value("spleen")}


def test_training_inputs_are_built_exactly_as_inference_builds_them():
    from DeepOrganSegLib.phantoms import make_phantom

    config = load_config(TINY)
    task = config.task("abdomen-ct")
    phantom = make_phantom("abdomen-ct", 3, shape=(24, 32, 32), spacing=(9.0, 9.0, 9.0))
    x, _ = working_arrays(phantom.image, phantom.labels, phantom.label_names, task, config)
    spec = TaskSpec("abdomen-ct", "", "CT", task.spacing_mm, task.normalization, ())
    expected = prepare_image(phantom.image, spec, working_grid(phantom.image, task.spacing_mm))
    np.testing.assert_array_equal(x, expected)
    assert x.shape[0] == 1  # the image channel only: no position channels in this config


def test_cached_cases_are_shared_read_only_memory_maps_of_their_files(tmp_path):
    """A training's cached cases are mapped from their ``.npz`` files (one copy in the file
    cache for every worker and run), equal to what ``np.load`` reads; a compressed member is
    read as ``np.load`` would."""
    from training.data import map_npz

    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    labels = (np.arange(3 * 4 * 5) % 7).astype(np.uint8).reshape(3, 4, 5)
    np.savez(tmp_path / "case.npz", image=image, labels=labels)
    np.savez_compressed(tmp_path / "packed.npz", image=image)
    mapped = map_npz(tmp_path / "case.npz")
    np.testing.assert_array_equal(mapped["image"], image)
    np.testing.assert_array_equal(mapped["labels"], labels)
    assert isinstance(mapped["image"], np.memmap) and not mapped["image"].flags.writeable
    np.testing.assert_array_equal(map_npz(tmp_path / "packed.npz")["image"], image)


def test_cache_files_a_run_does_not_use_are_said_and_with_prune_cache_deleted(
        phantom_cache, tmp_path, capsys):
    """Each phantom generator change writes every case anew: the cache folder only grows
    (56 GB once filled this machine's disk). A run says what it does not use; --prune-cache
    deletes exactly that, never a file the run needs."""
    import shutil

    folder = tmp_path / "cache"
    shutil.copytree(phantom_cache, folder)
    (folder / "abdomen-ct-abdomen-ct-0-0123456789.npz").write_bytes(b"x" * 1000)  # older
    (folder / "abdomen-ct-abdomen-ct-1-0123456789.tmp.npz").write_bytes(b"")  # a stopped build
    config = tiny_config(folder, tmp_path / "out")
    cases = [case for task in config.tasks
             for case in list_cases(task, "train") + list_cases(task, "val")]
    needed = {CaseCache(folder, config).path(case) for case in cases}
    train_module._tidy_cache(CaseCache(folder, config), cases, prune=False)
    assert "holds 2 case files" in capsys.readouterr().out
    assert len(list(folder.glob("*.npz"))) == len(needed) + 2
    train_module._tidy_cache(CaseCache(folder, config), cases, prune=True)
    assert "deleted 2 unused case files" in capsys.readouterr().out
    assert set(folder.glob("*.npz")) == needed
    train_module._tidy_cache(CaseCache(folder, config), cases, prune=False)
    assert capsys.readouterr().out == ""  # nothing to say


def test_patches_oversample_foreground_and_pad_small_volumes():
    rng = np.random.default_rng(0)
    labels = np.zeros((10, 40, 40), np.uint8)
    labels[5, 30, 30] = 4
    image = np.zeros((1, *labels.shape), np.float32)
    hits = 0
    for _ in range(40):
        x, y = sample_patch(image, labels, (16, 16, 16), rng, foreground_ratio=0.5)
        assert x.shape == (1, 16, 16, 16) and y.shape == (16, 16, 16)
        hits += bool((y == 4).any())
    assert 10 <= hits <= 35


def test_batches_are_a_pure_function_of_seed_step_and_rank(phantom_cache, tmp_path):
    config = tiny_config(phantom_cache, tmp_path)
    cache = CaseCache(phantom_cache, config)
    arrays = {t.name: [cache.load(c) for c in list_cases(t, "train")] for t in config.tasks}
    first, again = PatchBatchDataset(config, arrays), PatchBatchDataset(config, arrays)
    a, b = first[3], again[3]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["task"] == ["abdomen-ct", "brain-mr"]
    assert not torch.equal(first[3]["image"], first[4]["image"])
    other_rank = PatchBatchDataset(config, arrays, rank=1, world_size=2)
    assert not torch.equal(a["image"], other_rank[3]["image"])


def test_a_task_may_take_more_of_each_batch_than_the_others(phantom_cache, tmp_path):
    config = load_config(TINY, [f"data.cache_dir={phantom_cache}", f"output_dir={tmp_path}"])
    raw = config.to_dict()
    raw["tasks"][0]["samples"] = 2
    config = TrainConfig.from_dict(raw)
    cache = CaseCache(phantom_cache, config)
    arrays = {t.name: [cache.load(c) for c in list_cases(t, "train")] for t in config.tasks}
    batch = PatchBatchDataset(config, arrays)[0]
    assert config.batch_size == 3 and batch["image"].shape[0] == 3
    assert batch["task"] == ["abdomen-ct", "abdomen-ct", "brain-mr"]
    raw["tasks"][0]["samples"] = -1
    with pytest.raises(ValueError, match="samples"):
        TrainConfig.from_dict(raw)


# ---------------------------------------------------------------------------------------------
# Training, resume, export.


def _fixed_batch_loss(network, config: TrainConfig, phantom_cache: Path) -> float:
    cache = CaseCache(phantom_cache, config)
    arrays = {t.name: [cache.load(c) for c in list_cases(t, "train")] for t in config.tasks}
    batches = [PatchBatchDataset(config, arrays)[s] for s in range(4)]
    loss = MarginalDiceCELoss({t.name: config.task_channels(t) for t in config.tasks})
    network.eval()
    with torch.no_grad():
        return float(np.mean([loss(network(b["image"]), b["label"], b["task"]) for b in batches]))


def test_a_few_training_steps_reduce_the_loss(phantom_cache, tmp_path):
    config = tiny_config(phantom_cache, tmp_path, "schedule.steps=30", "data.augment=false")
    untrained = train(tiny_config(phantom_cache, tmp_path / "zero", "schedule.steps=0"), CPU,
                      show_progress=False).network
    trained = train(config, CPU, show_progress=False).network
    before = _fixed_batch_loss(untrained, config, phantom_cache)
    after = _fixed_batch_loss(trained, config, phantom_cache)
    assert after < 0.9 * before, (before, after)
    log = (tmp_path / "log.csv").read_text(encoding="utf-8").splitlines()
    assert len(log) == 31 and (tmp_path / "training_curves.png").exists()


def test_bf16_autocast_on_cpu_trains_float32_weights_that_reduce_the_loss(phantom_cache,
                                                                          tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)  # on any CPU
    config = tiny_config(phantom_cache, tmp_path, "schedule.steps=30", "data.augment=false",
                         "schedule.cpu_amp=true")
    untrained = train(tiny_config(phantom_cache, tmp_path / "zero", "schedule.steps=0"), CPU,
                      show_progress=False).network
    trained = train(config, CPU, show_progress=False).network
    assert all(p.dtype == torch.float32 for p in trained.parameters())
    before = _fixed_batch_loss(untrained, config, phantom_cache)
    after = _fixed_batch_loss(trained, config, phantom_cache)
    assert after < 0.9 * before, (before, after)


def test_bf16_autocast_on_a_cpu_without_native_bf16_trains_in_float32_and_says_so(
        phantom_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: False)
    asked = train(tiny_config(phantom_cache, tmp_path / "amp", "schedule.steps=3",
                              "schedule.cpu_amp=true"), CPU, show_progress=False).network
    assert "no native bf16" in capsys.readouterr().err
    plain = train(tiny_config(phantom_cache, tmp_path / "fp32", "schedule.steps=3"), CPU,
                  show_progress=False).network
    assert all(torch.equal(a, b) for a, b in zip(asked.state_dict().values(),
                                                 plain.state_dict().values()))


def _trained_whole_and_in_two_pieces(phantom_cache, tmp_path, *settings: str
                                     ) -> tuple[dict, dict]:
    """``last.pt`` of 4 steps in one go and of 2 steps, then 2 more resumed from ``last.pt``."""
    whole = tiny_config(phantom_cache, tmp_path / "whole", "schedule.steps=4", *settings)
    pieces = tiny_config(phantom_cache, tmp_path / "pieces", "schedule.steps=4", *settings)
    train(whole, CPU, show_progress=False)
    train(pieces, CPU, show_progress=False, stop_after=2)
    assert Checkpoint.load(tmp_path / "pieces" / "last.pt")["step"] == 2
    train(pieces, CPU, show_progress=False, resume=True)
    return (Checkpoint.load(tmp_path / "whole" / "last.pt"),
            Checkpoint.load(tmp_path / "pieces" / "last.pt"))


def test_resume_gives_bit_identical_weights(phantom_cache, tmp_path):
    a, b = _trained_whole_and_in_two_pieces(phantom_cache, tmp_path)
    assert a["step"] == b["step"] == 4
    for name, tensor in a["network"].items():
        assert torch.equal(tensor, b["network"][name]), name
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key])
    assert len((tmp_path / "pieces" / "log.csv").read_text(encoding="utf-8").splitlines()) == 5


def test_a_weight_average_is_kept_resumed_and_exported(phantom_cache, tmp_path):
    """With ``schedule.ema_decay`` the checkpoints keep an exponential moving average beside the
    weights, a resumed run continues it bit for bit, and the model file holds the average."""
    a, b = _trained_whole_and_in_two_pieces(phantom_cache, tmp_path, "schedule.ema_decay=0.5")
    assert a["ema_updates"] == b["ema_updates"] == 4
    for name, tensor in a["ema"].items():
        assert torch.equal(tensor, b["ema"][name]), name
    weight = next(name for name in a["network"] if name.endswith("weight"))
    assert not torch.equal(a["ema"][weight], a["network"][weight])  # an average, not a copy
    exported = load_model(export_checkpoint(tmp_path / "whole" / "last.pt",
                                            tmp_path / "model.safetensors"))
    assert torch.equal(exported.network.state_dict()[weight], a["ema"][weight])
    assert "weight average (EMA decay 0.5)" in exported.metadata.provenance["training"]


def test_export_refuses_a_file_that_is_not_a_checkpoint_in_one_line(tmp_path, capsys):
    garbage = tmp_path / "last.pt"
    garbage.write_bytes(b"not a checkpoint")
    from training.entry import run_script

    code = run_script(lambda: export_main([str(garbage), str(tmp_path / "model.safetensors")]))
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a training checkpoint" in err, err
    assert not (tmp_path / "model.safetensors").exists()


def test_a_weight_average_decay_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(Exception, match="ema_decay"):
        tiny_config(tmp_path, tmp_path, "schedule.ema_decay=1.0")


def test_a_resumed_run_keeps_the_model_file_it_started_from(phantom_cache, tmp_path):
    """The export's provenance says where a run's weights came from, even when the run was
    resumed (from last.pt) without repeating --init."""
    config = tiny_config(phantom_cache, tmp_path, "schedule.steps=3")
    train(config, CPU, show_progress=False, stop_after=1)
    state = Checkpoint.load(tmp_path / "last.pt")
    state["config"]["init_from"] = "start.safetensors"  # as a run launched with --init saves it
    torch.save(state, tmp_path / "last.pt")
    train(config, CPU, show_progress=False, resume=True)
    assert Checkpoint.load(tmp_path / "last.pt")["config"]["init_from"] == "start.safetensors"


def test_export_then_engine_load_then_segment(phantom_cache, tmp_path):
    from DeepOrganSegLib.phantoms import make_phantom

    config = tiny_config(phantom_cache, tmp_path, "schedule.steps=2")
    train(config, CPU, show_progress=False)
    tuned = tmp_path / "crf.json"  # training/tune_crf.py's output format
    tuned.write_text(json.dumps({"crf": {"iterations": 5, "appearance_intensity": 0.05},
                                 "tasks": {"brain-mr": {"appearance_intensity": 0.3}}}))
    assert export_main([str(tmp_path / "last.pt"), str(tmp_path / "model.safetensors"),
                        "--command", "pytest", "--crf", str(tuned)]) == 0
    path = tmp_path / "model.safetensors"
    metadata = read_metadata(path)
    assert metadata.crf_for("brain-mr")["appearance_intensity"] == 0.3
    assert metadata.crf_for("abdomen-ct")["appearance_intensity"] == 0.05
    assert [t.name for t in metadata.tasks] == ["abdomen-ct", "brain-mr"]
    assert metadata.num_classes == config.num_classes
    liver = metadata.task("abdomen-ct").labels[0]
    assert (liver.name, liver.value, liver.snomed["type"]["code"]) == ("liver", 1, "10200004")
    assert metadata.task("brain-mr").labels[1].value == config.label_value("grey_matter")
    assert metadata.task("brain-mr").normalization.kind == "mr"
    assert metadata.provenance["steps"] == 2 and "phantom" in metadata.provenance["data"]
    model = load_model(path)
    phantom = make_phantom("abdomen-ct", 10_001, shape=(24, 32, 32), spacing=(9.0, 9.0, 9.0))
    result = segment_volume(phantom.image, model, SegmentationOptions(task="abdomen-ct",
                                                                       crf=False))
    assert result.labels.array.shape == phantom.image.array.shape
    assert set(np.unique(result.labels.array)) <= {0, *range(1, 10)}


# ---------------------------------------------------------------------------------------------
# Distributed data parallel (gloo on CPU), as under torchrun.


def _ddp_replica(rank: int, world_size: int, port: int, config: dict, out: str) -> None:
    import os

    from training.config import TrainConfig as Config
    from training.distributed import init_distributed, shutdown_distributed
    from training.train import train as run

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        result = run(Config.from_dict(config), ctx, show_progress=False)
        torch.save(result.network.state_dict(), Path(out) / f"rank{rank}.pt")
    finally:
        shutdown_distributed()


def test_two_gloo_processes_keep_identical_replicas(phantom_cache, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tiny_config(phantom_cache, tmp_path, "schedule.steps=3").to_dict()
    mp.spawn(_ddp_replica, args=(2, port, config, str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    untrained = train(tiny_config(phantom_cache, tmp_path / "zero", "schedule.steps=0"), CPU,
                      show_progress=False).network.state_dict()
    for name, tensor in first.items():  # parameters and (synchronised) BatchNorm statistics
        assert torch.equal(tensor, second[name]), name
    assert any(not torch.equal(first[n], untrained[n]) for n in first)  # they did train
    assert (tmp_path / "last.pt").exists()  # rank 0 wrote the checkpoint


def test_training_entry_points_run_as_script_and_module():
    import subprocess

    for command in (["training/train.py"], ["-m", "training.train"]):
        done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "--resume" in done.stdout, done.stderr


# ---------------------------------------------------------------------------------------------
# Warm start, position inputs and thin slabs.


def test_warm_start_adding_position_channels_computes_what_the_model_file_did(tmp_path):
    from training.export import build_metadata
    from training.train import initial_weights

    image_only = tiny_config(tmp_path, tmp_path)
    torch.manual_seed(0)
    source = DSN3D(image_only.dsn_config()).eval()
    path = save_model(tmp_path / "start.safetensors", source, build_metadata(image_only, {}))
    with_position = tiny_config(tmp_path, tmp_path, "inputs=[image, position]")
    network = DSN3D(with_position.dsn_config())
    initial_weights(network, with_position, str(path))
    network.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    position = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(network(torch.cat([x, position], 1)), source(x))


def test_position_inputs_reach_the_cache_and_the_batches(tmp_path):
    config = tiny_config(tmp_path / "cache", tmp_path, "inputs=[image, position]")
    cache = CaseCache(tmp_path / "cache", config)
    task = config.task("abdomen-ct")
    image, labels = cache.load(list_cases(task, "train")[0])
    assert image.shape == (3, *labels.shape)
    arrays = {t.name: [cache.load(c) for c in list_cases(t, "train")] for t in config.tasks}
    batch = PatchBatchDataset(config, arrays)[0]
    assert batch["image"].shape[1] == 3


def test_thin_slab_batches_cut_every_patch_to_one_slab_depth(phantom_cache, tmp_path):
    config = tiny_config(phantom_cache, tmp_path, "data.thin_slab_probability=0.5",
                         "data.thin_slab_depths=[8]")
    arrays = {t.name: [CaseCache(phantom_cache, config).load(c) for c in list_cases(t, "train")]
              for t in config.tasks}
    dataset = PatchBatchDataset(config, arrays)
    depths = [dataset[step]["image"].shape[2] for step in range(12)]
    assert set(depths) == {8, 16}  # some batches thin, the rest the configured patch
    assert all(dataset[step]["label"].shape[1] == depth for step, depth in enumerate(depths))


def test_label_shift_moves_each_organ_by_its_own_offset_and_leaves_background_alone():
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[2:10, 2:22, 2:22] = 1
    labels[16:22, 2:22, 2:22] = 3
    image = np.random.default_rng(0).normal(0.0, 0.1, (2, 24, 24, 24)).astype(np.float32)
    shifted = shift_label_intensities(image, labels, 0.2, np.random.default_rng(1))
    offset = shifted - image
    assert shifted.dtype == np.float32 and shifted.shape == image.shape
    np.testing.assert_allclose(offset[0], offset[1], atol=1e-6)  # every channel alike
    first, second = offset[0, 5, 8:16, 8:16], offset[0, 19, 8:16, 8:16]
    assert np.ptp(first) < 1e-5 and np.ptp(second) < 1e-5  # one offset per organ inside it
    largest = max(abs(first.mean()), abs(second.mean()))
    assert np.abs(offset[0, 12]).max() < 0.02 * largest  # background 3 voxels from organs
    assert abs(first.mean() - second.mean()) > 1e-3  # drawn independently
    ramp = offset[0, 8:12, 12, 12]  # the edge is smoothed (partial volume), not a step
    assert np.all(np.abs(np.diff(ramp)) < abs(first.mean()))


def test_label_shift_is_drawn_into_the_batches_only_when_configured(phantom_cache, tmp_path):
    shifted = tiny_config(phantom_cache, tmp_path, "data.label_shift_sd=0.3",
                          "data.label_shift_probability=1.0", "data.augment=false")
    plain = tiny_config(phantom_cache, tmp_path, "data.augment=false")
    arrays = {t.name: [CaseCache(phantom_cache, plain).load(c) for c in list_cases(t, "train")]
              for t in plain.tasks}
    a, b = PatchBatchDataset(plain, arrays)[0], PatchBatchDataset(shifted, arrays)[0]
    torch.testing.assert_close(a["label"], b["label"])  # same patches, same labels
    background = a["label"] == 0
    inside = ~background
    assert inside.any()
    difference = (b["image"][:, 0] - a["image"][:, 0]).abs()
    assert float(difference[inside].mean()) > 0.05
