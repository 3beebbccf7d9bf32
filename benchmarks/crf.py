"""Dense 3D CRF benchmark: DeepOrganSeg's PyTorch CRF beside pydensecrf2 (and SimpleCRF if installed).

    PYTHONPATH=DeepOrganSeg python benchmarks/crf.py [--scenes phantom ellipsoids]
        [--sizes 128x128x128 96x256x256] [--repeats 3]
    PYTHONPATH=DeepOrganSeg python benchmarks/crf.py --model Resources/Models/<model>.safetensors
    PYTHONPATH=DeepOrganSeg python benchmarks/crf.py --quick

Two scenes, each at every size, each with its own CRF parameters:

* ``phantom``: a synthetic abdominal CT phantom (``DeepOrganSegLib.phantoms``) with three classes
  (background, liver, spleen), its image normalised as the CT models do ((HU - 40) / 350), on a
  2 mm grid (128³) or a 3 × 1.5 × 1.5 mm grid (96×256×256), the default :class:`CRFParameters`;
* ``ellipsoids``: three classes (background and two nested ellipsoids) with image means
  0 / 100 / 180 and Gaussian noise of SD 20, on a 1 mm grid, θα 5 mm, θβ 30 (image units),
  w1 5, θγ 2 mm, w2 3, 5 iterations: fine voxels, a narrow intensity range.

Both get a noisy "network prediction" made from the true labels. Every implementation gets the
same unary (``-log max(p, 1e-5)``), the same kernels (positions in mm over θ, intensity over θβ)
and the same parameters; each run is a fresh subprocess, the implementations interleaved.
Reported: the median wall time from the input arrays to the refined marginals, the peak resident
memory (Linux VmHWM, reset after imports and loading the inputs) above the resident memory at that
point, and the share of voxels whose label agrees with pydensecrf's.

With ``--model``, instead: Dice per organ of a model file's segmentations without and with the CRF
(phantoms of each kind and the real ICBM152 T1 brain).

``--quick``: both, in seconds: the timing of the phantom scene at 24×32×32, one repeat, then the
Dice table of ``--model`` (default: the bundled model) on one small abdominal phantom (48×48×32
voxels of 4 mm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import add_quick_flag, installed, report_skipped, reset_peak_rss_kb, status_kb

NUM_CLASSES = 3
PROBABILITY_FLOOR = 1e-5  # as DeepOrganSegLib.crf and pydensecrf.utils.unary_from_softmax
IMPLEMENTATIONS = ("deeporganseg", "pydensecrf2", "simplecrf")


SPACING_ZYX = {(128, 128, 128): (2.0, 2.0, 2.0), (96, 256, 256): (3.0, 1.5, 1.5)}
"""Working-grid spacings (mm) of the phantom scene: a 2 mm grid as the bundled models use, and a
CT-like anisotropic grid; other sizes get 2 mm."""

ELLIPSOID_CRF = {"iterations": 5, "appearance_weight": 5.0, "appearance_spatial_mm": 5.0,
                 "appearance_intensity": 30.0, "smoothness_weight": 3.0,
                 "smoothness_spatial_mm": 2.0}
"""The ellipsoid scene's CRF parameters (intensity width in its image units)."""


def _noisy_prediction(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Probabilities ``[3, Z, Y, X]`` of a noisy "network": smoothed one-hot logits plus
    correlated noise."""
    from scipy import ndimage

    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels].transpose(3, 0, 1, 2)
    logits = 3.0 * ndimage.gaussian_filter(one_hot, (0, 1.5, 1.5, 1.5))
    logits += ndimage.gaussian_filter(rng.normal(0, 4.0, one_hot.shape), (0, 1, 1, 1))
    probabilities = np.exp(logits - logits.max(0))
    probabilities /= probabilities.sum(0)
    return probabilities.astype(np.float32)


def make_phantom_scene(shape: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
    """Phantom image (normalised), 3-class labels and a noisy prediction of them."""
    from DeepOrganSegLib.crf.parameters import CRFParameters
    from DeepOrganSegLib.phantoms import make_phantom

    spacing_kji = SPACING_ZYX.get(shape, (2.0, 2.0, 2.0))
    phantom = make_phantom("abdomen-ct", seed, shape=shape, spacing=spacing_kji[::-1],
                           contrast_phase="portal-venous")
    labels = phantom.labels.array.astype(np.int64)
    labels[labels > 2] = 0  # 1 liver, 2 spleen, everything else background
    image = (np.clip(phantom.image.array, -1000, 1000) - 40.0) / 350.0
    return {"image": image.astype(np.float32), "labels": labels.astype(np.uint8),
            "probabilities": _noisy_prediction(labels, np.random.default_rng(seed)),
            "spacing_kji": np.array(spacing_kji),
            "crf": np.array(json.dumps(CRFParameters().to_dict()))}


def make_ellipsoid_scene(shape: tuple[int, int, int], seed: int) -> dict[str, np.ndarray]:
    """Two nested ellipsoids in background on a 1 mm grid: image means 0 / 100 / 180, noise SD
    20, 3-class labels and a noisy prediction of them."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = (np.linspace(-1.0, 1.0, n, dtype=np.float32)[:, None, None] for n in shape)
    yy, xx = yy.reshape(1, -1, 1), xx.reshape(1, 1, -1)
    outer = (zz / 0.8) ** 2 + (yy / 0.7) ** 2 + (xx / 0.6) ** 2 < 1.0
    inner = ((zz - 0.1) / 0.35) ** 2 + ((yy + 0.15) / 0.3) ** 2 + ((xx - 0.1) / 0.4) ** 2 < 1.0
    labels = np.where(inner, 2, np.where(outer, 1, 0)).astype(np.int64)
    means = np.array([0.0, 100.0, 180.0], dtype=np.float32)
    image = means[labels] + rng.normal(0.0, 20.0, shape).astype(np.float32)
    return {"image": image.astype(np.float32), "labels": labels.astype(np.uint8),
            "probabilities": _noisy_prediction(labels, rng),
            "spacing_kji": np.array((1.0, 1.0, 1.0)), "crf": np.array(json.dumps(ELLIPSOID_CRF))}


SCENES = {"phantom": make_phantom_scene, "ellipsoids": make_ellipsoid_scene}


def scene_parameters(scene: dict[str, np.ndarray]):
    """The scene's :class:`CRFParameters`."""
    from DeepOrganSegLib.crf.parameters import CRFParameters

    return CRFParameters.from_dict(json.loads(str(scene["crf"])))


# ------------------------------------------------------------------------------------- workers

def run_deeporganseg(scene: dict[str, np.ndarray], device: str = "cpu") -> np.ndarray:
    """Our labels on ``device``, from the input arrays (copied there) to the labels (copied
    back); ``benchmarks/gpu.py`` times it on CUDA."""
    import torch

    from DeepOrganSegLib.crf.meanfield import dense_crf

    q = dense_crf(torch.from_numpy(scene["probabilities"]).to(device),
                  torch.from_numpy(scene["image"]).to(device), tuple(scene["spacing_kji"]),
                  scene_parameters(scene))
    return q.max(0).indices.cpu().numpy()  # (torch's argmax over dim 0 is several times slower)


def _features(scene: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """pydensecrf features [d, N] float32: appearance (positions/θα, I/θβ), smoothness (positions/θγ)."""
    params = scene_parameters(scene)
    shape = scene["image"].shape
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    positions = grid * scene["spacing_kji"].astype(np.float32)[:, None]
    appearance = np.concatenate([positions / params.appearance_spatial_mm,
                                 scene["image"].reshape(1, -1) / params.appearance_intensity])
    return (np.ascontiguousarray(appearance, dtype=np.float32),
            np.ascontiguousarray(positions / params.smoothness_spatial_mm, dtype=np.float32))


def run_pydensecrf2(scene: dict[str, np.ndarray]) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    params = scene_parameters(scene)
    probabilities = scene["probabilities"].reshape(NUM_CLASSES, -1)
    unary = np.ascontiguousarray(-np.log(np.maximum(probabilities, PROBABILITY_FLOOR)))
    appearance, smoothness = _features(scene)
    crf = dcrf.DenseCRF(unary.shape[1], NUM_CLASSES)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseEnergy(appearance, compat=params.appearance_weight)
    crf.addPairwiseEnergy(smoothness, compat=params.smoothness_weight)
    del appearance, smoothness
    q = np.asarray(crf.inference(params.iterations))
    return q.argmax(0).reshape(scene["image"].shape)


def run_simplecrf(scene: dict[str, np.ndarray]) -> np.ndarray:
    """SimpleCRF's densecrf3d (DeepMedic's 3D dense CRF); widths in voxels, uint8 intensities."""
    import denseCRF3D

    params = scene_parameters(scene)
    image = scene["image"]
    low, high = float(image.min()), float(image.max())
    levels = 255.0 / max(high - low, 1e-6)
    quantised = np.round((image - low) * levels).astype(np.uint8)[..., None]
    spacing = scene["spacing_kji"]
    param = {
        "MaxIterations": float(params.iterations),
        "PosW": params.smoothness_weight,
        "PosZStd": params.smoothness_spatial_mm / spacing[0],
        "PosRStd": params.smoothness_spatial_mm / spacing[1],
        "PosCStd": params.smoothness_spatial_mm / spacing[2],
        "BilateralW": params.appearance_weight,
        "BilateralZStd": params.appearance_spatial_mm / spacing[0],
        "BilateralRStd": params.appearance_spatial_mm / spacing[1],
        "BilateralCStd": params.appearance_spatial_mm / spacing[2],
        "ModalityNum": 1,
        "BilateralModsStds": (params.appearance_intensity * levels,),
    }
    probabilities = np.ascontiguousarray(scene["probabilities"].transpose(1, 2, 3, 0))
    return denseCRF3D.densecrf3d(quantised, probabilities, param)


RUNNERS = {"deeporganseg": run_deeporganseg, "pydensecrf2": run_pydensecrf2,
           "simplecrf": run_simplecrf}


def worker(implementation: str, data: Path, out: Path) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import importlib

    importlib.import_module({"deeporganseg": "torch", "pydensecrf2": "pydensecrf.densecrf",
                             "simplecrf": "denseCRF3D"}[implementation])
    import DeepOrganSegLib.crf  # noqa: F401  (imported before the baseline by every worker)

    scene = dict(np.load(data))
    baseline_kb = reset_peak_rss_kb()
    start = time.perf_counter()
    labels = RUNNERS[implementation](scene)
    elapsed = time.perf_counter() - start
    peak_kb = status_kb("VmHWM")
    np.save(out, labels.astype(np.uint8))
    print(json.dumps({"time_s": elapsed, "peak_mb": (peak_kb - baseline_kb) / 1024}))


# ------------------------------------------------------------------------- Dice of a model

PHANTOM_CASES = (("abdomen-ct", 101), ("heart-mr", 102), ("brain-mr", 103))
"""The phantoms (kind, seed) of the Dice table."""
QUICK_PHANTOM = {"shape": (32, 48, 48), "spacing": (4.0, 4.0, 4.0)}
"""``make_phantom`` options of ``--quick``'s one case (the first phantom): a small working grid."""


def evaluation_cases(quick: bool = False) -> list[tuple[str, str, object, np.ndarray, dict[int, str]]]:
    """(case, task, image Volume, true labels, label names): one phantom per kind and the real
    ICBM152 2009 T1 template (nilearn) with its tissue maps' argmax as the truth; ``quick``:
    one abdominal phantom as :data:`QUICK_PHANTOM` says."""
    import SimpleITK as sitk

    from DeepOrganSegLib.phantoms import LABELS, make_phantom
    from DeepOrganSegLib.phantoms.brain import icbm152, nilearn_data_folder
    from DeepOrganSegLib.volume import Volume

    cases = []
    for kind, seed in PHANTOM_CASES[:1] if quick else PHANTOM_CASES:
        phantom = make_phantom(kind, seed, **(QUICK_PHANTOM if quick else {}))
        cases.append((f"{kind} phantom", kind, phantom.image, phantom.labels.array,
                      phantom.label_names))
    if quick:
        return cases
    maps = icbm152()
    t1 = sitk.ReadImage(str(nilearn_data_folder() / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"))
    tissue = np.stack([np.full_like(maps["gm"], 0.5), maps["csf"], maps["gm"], maps["wm"]])
    cases.append(("ICBM152 T1 (real)", "brain-mr", Volume.from_sitk(sitk.Cast(t1, sitk.sitkFloat32)),
                  tissue.argmax(0), LABELS["brain-mr"]))
    return cases


def model_dice(model_path: Path, crf: dict[str, object], quick: bool = False
               ) -> list[dict[str, object]]:
    """Per-organ Dice of the model's segmentation without and with the CRF (parameters ``crf``)
    on :func:`evaluation_cases` (``quick``: the small ones); no other post-processing, so that
    only the CRF differs."""
    from dataclasses import replace

    from DeepOrganSegLib.model import load_model
    from DeepOrganSegLib.metrics import dice
    from DeepOrganSegLib.options import SegmentationOptions
    from DeepOrganSegLib.segment import segment_volume

    model = load_model(model_path)
    model = replace(model, metadata=replace(model.metadata, crf=crf))
    rows = []
    for case, task, image, truth, names in evaluation_cases(quick):
        results = {crf: segment_volume(image, model, SegmentationOptions(
            task=task, crf=crf, largest_component=False, fill_holes=False)) for crf in (False, True)}
        true_value = {name: value for value, name in names.items()}
        for label in results[True].task.labels:  # organs matched by name
            if label.name in true_value:
                truth_mask = truth == true_value[label.name]
                rows.append({"case": case, "organ": label.name, **{
                    key: dice(results[crf].labels.array == label.value, truth_mask, empty=0.0)
                    for key, crf in (("without", False), ("with", True))}})
    return rows


def print_dice_table(rows: list[dict[str, object]], crf: dict[str, object]) -> None:
    print(f"# CRF parameters: {json.dumps(crf)}")
    print("| case | organ | Dice without CRF | Dice with CRF | change |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['organ']} | {r['without']:.3f} | {r['with']:.3f} "
              f"| {r['with'] - r['without']:+.3f} |")
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        print(f"| {case} | **mean** | {np.mean([r['without'] for r in mine]):.3f} "
              f"| {np.mean([r['with'] for r in mine]):.3f} "
              f"| {np.mean([r['with'] - r['without'] for r in mine]):+.3f} |")


# ------------------------------------------------------------------------------------- driver

def available(implementation: str) -> bool:
    """Whether ``implementation``'s package is installed here."""
    return installed({"deeporganseg": "torch", "pydensecrf2": "pydensecrf",
                      "simplecrf": "denseCRF3D"}[implementation])


def measure(implementation: str, data: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", implementation, "--data", str(data),
               "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{implementation} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def benchmark_size(scene_name: str, shape: tuple[int, int, int], repeats: int,
                   implementations: list[str], workdir: Path,
                   env: dict[str, str]) -> list[dict[str, object]]:
    from DeepOrganSegLib.metrics import dice

    scene = SCENES[scene_name](shape, seed=0)
    data = workdir / f"{scene_name}_{'x'.join(map(str, shape))}.npz"
    np.savez(data, **scene)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in implementations}
    for _ in range(repeats):
        for name in implementations:
            runs[name].append(measure(name, data, workdir / f"{name}.npy", env))
    labels = {name: np.load(workdir / f"{name}.npy") for name in implementations}
    reference = labels.get("pydensecrf2")
    before = scene["probabilities"].argmax(0)
    rows = []
    for name in implementations:
        times = [r["time_s"] for r in runs[name]]
        row = {"scene": scene_name, "size": "×".join(map(str, shape)), "implementation": name,
               "time_s": statistics.median(times), "times_s": times,
               "peak_mb": max(r["peak_mb"] for r in runs[name]),
               "bytes_per_voxel": max(r["peak_mb"] for r in runs[name]) * 2 ** 20 / np.prod(shape),
               "agreement": None if reference is None else float((labels[name] == reference).mean()),
               "dice": [round(dice(labels[name], scene["labels"], k, empty=0.0), 4)
                        for k in (1, 2)]}
        rows.append(row)
    rows.append({"scene": scene_name, "size": "×".join(map(str, shape)),
                 "implementation": "(no CRF)",
                 "dice": [round(dice(before, scene["labels"], k, empty=0.0), 4) for k in (1, 2)]})
    return rows


def print_table(rows: list[dict[str, object]]) -> None:
    baseline = {(r["scene"], r["size"]): r for r in rows if r["implementation"] == "pydensecrf2"}
    nan = {"time_s": float("nan"), "peak_mb": float("nan")}
    print("| scene | size (Z×Y×X) | implementation | time (s) | speed-up | peak memory (MB) "
          "| bytes/voxel | memory vs pydensecrf2 | labels = pydensecrf2 | Dice class 1, 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        where = f"| {r['scene']} | {r['size']} | {r['implementation']} |"
        if "time_s" not in r:
            print(f"{where} | | | | | | {r['dice'][0]:.3f}, {r['dice'][1]:.3f} |")
            continue
        reference = baseline.get((r["scene"], r["size"]), nan)
        speedup = reference["time_s"] / r["time_s"]
        memory = r["peak_mb"] / reference["peak_mb"]
        agreement = "" if r["agreement"] is None else f"{100 * r['agreement']:.2f} %"
        print(f"{where} {r['time_s']:.2f} | {speedup:.2f}× "
              f"| {r['peak_mb']:.0f} | {r['bytes_per_voxel']:.0f} | {memory:.2f} | {agreement} "
              f"| {r['dice'][0]:.3f}, {r['dice'][1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--sizes", nargs="+", default=["128x128x128", "96x256x256"],
                        help="volume sizes Z x Y x X")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS),
                        choices=IMPLEMENTATIONS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE", "inherit"),
                        default="PASSIVE",
                        help="OMP_WAIT_POLICY of the workers (default PASSIVE: on a shared machine "
                             "OpenMP threads that spin at every barrier wait for a descheduled "
                             "peer; pydensecrf2 has no OpenMP and is unaffected)")
    parser.add_argument("--model", type=Path,
                        help="instead of timing: Dice per organ of this model file without and "
                             "with the CRF, on phantoms and the ICBM152 brain (with --quick: "
                             "the model of the quick Dice table; default the bundled one)")
    parser.add_argument("--model-crf", choices=("defaults", "model"), default="defaults",
                        help="with --model: the engine's default CRF parameters or the model's")
    parser.add_argument("--worker", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    add_quick_flag(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.out)
        return
    if args.quick and args.json:
        parser.error("--json records a full run: leave out --quick")
    if args.quick:
        args.scenes, args.sizes, args.repeats = ["phantom"], ["24x32x32"], 1
    if args.quick or not args.model:
        rows = timing(args)
    if args.quick or args.model:
        rows = model_mode(args.model, args.model_crf, args.quick)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def model_mode(model: Path | None, crf_choice: str, quick: bool) -> list[dict[str, object]]:
    """The Dice table of ``model`` (default: the bundled one) without and with the CRF: the
    engine's default CRF parameters, or the model's own (``crf_choice`` "model")."""
    from DeepOrganSegLib.crf.parameters import CRFParameters
    from DeepOrganSegLib.model import read_metadata
    from DeepOrganSegLib.resources import default_model_path

    model = model or default_model_path()
    crf = CRFParameters().to_dict()
    if crf_choice == "model":
        crf = read_metadata(model).crf or crf
    rows = model_dice(model, crf, quick)
    print_dice_table(rows, crf)
    return rows


def timing(args: argparse.Namespace) -> list[dict[str, object]]:
    """The timing table of every scene and size, each measurement in a fresh worker."""
    import torch

    env = os.environ.copy()
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    implementations = [name for name in args.implementations if available(name)]
    for name in sorted(set(args.implementations) - set(implementations)):
        report_skipped(name, "not installed")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} with {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{env.get('OMP_WAIT_POLICY', 'unset')}; load average at start "
          f"{os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for scene in args.scenes:
            for size in args.sizes:
                shape = tuple(int(n) for n in size.lower().split("x"))
                rows += benchmark_size(scene, shape, args.repeats, implementations,
                                       Path(workdir), env)
    print(f"# load average at end {os.getloadavg()[0]:.1f}")
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
