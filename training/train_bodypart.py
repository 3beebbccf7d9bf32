"""Train the body-part classifier (:mod:`DeepOrganSegLib.bodypart`) on synthetic phantoms.

    python training/train_bodypart.py [--steps 1200] [--cache runs/bodypart/cache]

Data: whole-body CT phantoms (``body-ct``: a region label per slice, neck or head to thighs)
plus brain and heart MR phantoms (``brain-mr`` slices are head, ``heart-mr`` slices chest), half
of them with a random (axial, possibly tilted) orientation, a third with a tight field of view.
Training seeds and held-out seeds are disjoint ranges. Writes the classifier file
(``Resources/Models/DeepOrganSeg-bodypart-v1.bodypart``, metrics in its provenance), the
held-out confusion matrix and a region-profile figure (``docs/images/bodypart_*.png``), and
prints the held-out metrics as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

if not __package__:  # run as a script: make ``import training`` work, quietly interruptible
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from training.entry import interrupt_quietly_while_starting
    interrupt_quietly_while_starting()

import numpy as np
import torch
import torch.nn.functional as F

from DeepOrganSegLib.bodypart import MODALITIES, REGIONS
from DeepOrganSegLib.bodypart.classifier import (CLASSIFIER_FILE, BodyPartNet, ClassifierMetadata,
                                                 load_classifier, save_classifier)
from DeepOrganSegLib.bodypart.profile import viterbi_profile
from DeepOrganSegLib.bodypart.slices import SliceGeometry, slice_stack
from DeepOrganSegLib.phantoms import make_phantom
from DeepOrganSegLib.volume import Volume
from training.entry import run_script

REPOSITORY = Path(__file__).resolve().parent.parent
KINDS = ("body-ct", "brain-mr", "heart-mr")
#: Region of every slice of the phantom kinds without per-slice regions.
CONSTANT_REGION = {"brain-mr": "head", "heart-mr": "chest"}
#: Slices whose body covers less than this share of the window carry no region label.
MIN_BODY_FRACTION = 0.02
WIDTHS = (16, 32, 64, 96)


# ============================================================================ data


def phantom_case(kind: str, seed: int, cache: Path) -> dict[str, np.ndarray]:
    """One phantom as arrays (image, geometry, per-slice regions, modality), cached as .npz."""
    path = cache / f"{kind}-{seed}.npz"
    if not path.exists():
        phantom = make_phantom(kind, seed, random_orientation=seed % 2 == 1,
                               field_of_view_cutoff=seed % 3 == 0)
        image = phantom.image
        regions = (phantom.slice_regions if phantom.slice_regions is not None else
                   np.full(image.array.shape[0], REGIONS.index(CONSTANT_REGION[kind])))
        temporary = path.with_suffix(".tmp.npz")
        np.savez(temporary, image=image.array, spacing=image.spacing, origin=image.origin,
                 direction=image.direction, regions=regions, modality=phantom.modality, kind=kind)
        temporary.rename(path)
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def classifier_slices(case: dict[str, np.ndarray], geometry: SliceGeometry
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The classifier's slices of a case (uint8 images [n, c, s, s]), their region targets (-1 =
    no body), the case's modality index and intensity features, and the slice heights (mm):
    each slice takes the region of the input slice nearest in height."""
    volume = Volume(case["image"], tuple(case["spacing"]), tuple(case["origin"]),
                    case["direction"])
    stack = slice_stack(volume, geometry)
    ni, nj, nk = volume.size
    centres = np.stack([np.full(nk, (ni - 1) / 2), np.full(nk, (nj - 1) / 2), np.arange(nk)], 1)
    input_z = volume.index_to_physical(centres)[:, 2]
    nearest = np.abs(stack.z_mm[:, None] - input_z[None]).argmin(axis=1)
    regions = case["regions"][nearest].astype(np.int64)
    body = (stack.images[:, geometry.context] > 0.1).mean(axis=(1, 2))
    regions[body < MIN_BODY_FRACTION] = -1
    modality = MODALITIES.index(str(case["modality"]))
    images = np.round(stack.images * 255).astype(np.uint8)
    return images, regions, modality, stack.features, stack.z_mm


def cropped(case: dict[str, np.ndarray], first: int, stop: int) -> dict[str, np.ndarray]:
    """``case`` restricted to input slices ``first:stop`` (same geometry otherwise)."""
    direction, spacing = case["direction"], case["spacing"]
    origin = case["origin"] + direction @ (np.array([0.0, 0.0, first]) * spacing)
    return {**case, "image": case["image"][first:stop], "regions": case["regions"][first:stop],
            "origin": origin}


def field_of_view_crops(case: dict[str, np.ndarray], seed: int) -> list[dict[str, np.ndarray]]:
    """Shorter scans cut from a whole-body case, so that the percentile normalisation sees
    head-only, chest-only, abdomen-only ... fields of view: the head and neck (when shown) and a
    random 20-50 % of the slices."""
    crops = []
    head_neck = np.nonzero(case["regions"] <= REGIONS.index("neck"))[0]
    if head_neck.size > 10:
        crops.append(cropped(case, int(head_neck.min()), int(head_neck.max()) + 1))
    rng = np.random.default_rng(seed)
    n = len(case["regions"])
    length = int(n * rng.uniform(0.2, 0.5))
    first = int(rng.integers(0, n - length))
    crops.append(cropped(case, first, first + length))
    return crops


def dataset(seeds: range, cache: Path, geometry: SliceGeometry, crops: bool) -> dict[str, list]:
    """Slices of every kind for ``seeds`` (plus field-of-view crops of the whole-body cases
    when ``crops``); lists per case (so that cases can be evaluated one by one)."""
    out: dict[str, list] = {"images": [], "regions": [], "modality": [], "features": [],
                            "z": [], "kind": []}
    for seed in seeds:
        for kind in KINDS:
            case = phantom_case(kind, seed, cache)
            cases = [case] + (field_of_view_crops(case, seed) if crops and kind == "body-ct"
                              else [])
            for index, part in enumerate(cases):
                slices = classifier_slices(part, geometry)
                for key, value in zip(out, slices + (kind if index == 0 else f"{kind}-crop",)):
                    out[key].append(value)
    return out


# ============================================================================ training


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random in-plane flips, rotation (+-15 deg), scale (0.85-1.2), shift (+-10 %), contrast
    and gamma: the body's size and position and the normalisation's percentiles vary."""
    n = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    angle = uniform(-0.26, 0.26)
    scale = uniform(0.85, 1.2)
    flip_x = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale * flip_x
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale * flip_y
    theta[:, :, 2] = uniform(-0.1, 0.1)[:, None].expand(n, 2) * torch.tensor([1.0, -1.0])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    contrast = uniform(0.8, 1.25)[:, None, None, None]
    gamma = torch.exp(uniform(-0.35, 0.35))[:, None, None, None]
    return (x.clamp(0, 1) ** gamma * contrast).clamp(0, 1)


def train(data: dict[str, list], geometry: SliceGeometry, steps: int, batch: int,
          seed: int) -> BodyPartNet:
    """Adam on region + modality cross-entropy; regions weighted by inverse square-root
    frequency (head and neck slices are rarer than legs)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images = torch.from_numpy(np.concatenate(data["images"]))
    regions = torch.from_numpy(np.concatenate(data["regions"]))
    modality = torch.tensor(data["modality"])
    features = torch.from_numpy(np.stack(data["features"]))
    counts = torch.bincount(regions[regions >= 0], minlength=len(REGIONS)).float()
    weights = (counts.sum() / counts.clamp(min=1)).sqrt()
    weights /= weights.mean()
    sampling = torch.where(regions >= 0, weights[regions.clamp(min=0)], torch.tensor(0.3))
    network = BodyPartNet(geometry.channels, WIDTHS)
    optimizer = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    network.train()
    started = time.perf_counter()
    for step in range(steps):
        index = torch.multinomial(sampling, batch, replacement=True, generator=generator)
        x = augment(images[index].float() / 255, generator)
        region_logits, modality_logits = network(x, features)
        target = regions[index]
        loss = F.cross_entropy(modality_logits, modality)
        if (target >= 0).any():
            loss = loss + F.cross_entropy(region_logits[target >= 0], target[target >= 0])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return network.eval()


# ============================================================================ evaluation


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); NaN without both classes."""
    from scipy.stats import rankdata

    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2)
                 / (n_positive * n_negative))


@torch.no_grad()
def evaluate(network: BodyPartNet, data: dict[str, list]) -> dict:
    """Held-out metrics: per-slice error rate (argmax, and after the ordered profile smoothing
    for body-ct cases), per-class one-vs-rest AUC, confusion matrix, per-volume modality
    accuracy."""
    truth, predicted, smoothed_truth, smoothed, probabilities = [], [], [], [], []
    modality_correct = []
    for images, regions, modality, features, kind in zip(
            data["images"], data["regions"], data["modality"], data["features"], data["kind"]):
        region_logits, modality_logits = network(torch.from_numpy(images).float() / 255,
                                                 torch.from_numpy(features))
        log_p = torch.log_softmax(region_logits, 1).numpy()
        has_body = regions >= 0
        truth.append(regions[has_body])
        predicted.append(log_p.argmax(1)[has_body])
        probabilities.append(np.exp(log_p[has_body]))
        modality_correct.append(int(modality_logits.argmax()) == modality)
        if kind == "body-ct":
            labels = viterbi_profile(log_p[::-1])[::-1]
            smoothed_truth.append(regions[has_body])
            smoothed.append(labels[has_body])
    truth_all, predicted_all = np.concatenate(truth), np.concatenate(predicted)
    scores = np.concatenate(probabilities)
    confusion = np.zeros((len(REGIONS), len(REGIONS)), dtype=np.int64)
    np.add.at(confusion, (truth_all, predicted_all), 1)
    body_truth, body_smoothed = np.concatenate(smoothed_truth), np.concatenate(smoothed)
    body_raw = np.concatenate([p for p, k in zip(predicted, data["kind"]) if k == "body-ct"])
    return {
        "slices": int(len(truth_all)),
        "volumes": len(truth),
        "error_rate": float((truth_all != predicted_all).mean()),
        "auc": {name: roc_auc(scores[:, r], truth_all == r) for r, name in enumerate(REGIONS)},
        "body_ct_error_rate_raw": float((body_truth != body_raw).mean()),
        "body_ct_error_rate_profile": float((body_truth != body_smoothed).mean()),
        "modality_accuracy": float(np.mean(modality_correct)),
        "confusion": confusion.tolist(),
    }


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (r, c), count in np.ndenumerate(confusion):
        axes.text(c, r, str(count), ha="center", va="center", fontsize=8,
                  color="white" if rates[r, c] > 0.5 else "black")
    axes.set_xticks(range(len(REGIONS)), REGIONS, rotation=30)
    axes.set_yticks(range(len(REGIONS)), REGIONS)
    axes.set_xlabel("predicted (per slice, before profile smoothing)")
    axes.set_ylabel("true region")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


@torch.no_grad()
def plot_profile(network: BodyPartNet, data: dict[str, list], path: Path) -> None:
    """Per-slice probabilities, truth and the smoothed profile of the first held-out body CT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = data["kind"].index("body-ct")
    images, regions, z = data["images"][case], data["regions"][case], data["z"][case]
    features = torch.from_numpy(data["features"][case])
    log_p = torch.log_softmax(network(torch.from_numpy(images).float() / 255, features)[0],
                              1).numpy()
    labels = viterbi_profile(log_p[::-1])[::-1]
    figure, axes = plt.subplots(figsize=(7.5, 3.2), dpi=120)
    for r, name in enumerate(REGIONS):
        axes.plot(z, np.exp(log_p[:, r]), lw=1, label=name)
    axes.plot(z, (regions + 0.5) / len(REGIONS), "k.", ms=2, label="truth (region index)")
    axes.plot(z, (labels + 0.5) / len(REGIONS), "r-", lw=1, label="profile (region index)")
    axes.set_xlabel("patient z (mm, superior to the right)")
    axes.set_ylabel("probability")
    axes.legend(fontsize=6, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ============================================================================ main


def _without_nan(value):
    """``value`` with NaN floats replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def parse_range(text: str) -> range:
    start, _, stop = text.partition(":")
    return range(int(start), int(stop))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=REPOSITORY / "runs" / "bodypart" / "cache")
    parser.add_argument("--train-seeds", type=parse_range, default=range(1000, 1080))
    parser.add_argument("--test-seeds", type=parse_range, default=range(5000, 5012))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path,
                        default=REPOSITORY / "Resources" / "Models" / CLASSIFIER_FILE)
    parser.add_argument("--figures", type=Path, default=REPOSITORY / "docs" / "images")
    args = parser.parse_args(argv)
    if set(args.train_seeds) & set(args.test_seeds):
        parser.error("training and held-out seeds overlap")
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    geometry = SliceGeometry()
    training = dataset(args.train_seeds, args.cache, geometry, crops=True)
    held_out = dataset(args.test_seeds, args.cache, geometry, crops=False)
    network = train(training, geometry, args.steps, args.batch, args.seed)
    metrics = evaluate(network, held_out)
    plot_confusion(np.array(metrics["confusion"]), args.figures / "bodypart_confusion.png",
                   f"held-out phantom slices: error {100 * metrics['error_rate']:.1f} %, "
                   f"mean AUC {np.nanmean(list(metrics['auc'].values())):.4f}")
    plot_profile(network, held_out, args.figures / "bodypart_profile.png")
    provenance = {
        "data": "synthetic phantoms (DeepOrganSegLib.phantoms): body-ct, brain-mr, heart-mr",
        "train_seeds": f"{args.train_seeds.start}:{args.train_seeds.stop}",
        "test_seeds": f"{args.test_seeds.start}:{args.test_seeds.stop}",
        "train_slices": int(sum(len(r) for r in training["regions"])),
        "steps": args.steps, "batch": args.batch, "command": "python training/train_bodypart.py",
        "date": time.strftime("%Y-%m-%d"),
        "held_out": {k: v for k, v in metrics.items() if k != "confusion"},
    }
    metadata = ClassifierMetadata(WIDTHS, REGIONS, geometry, _without_nan(provenance))
    save_classifier(args.out, network, metadata)
    load_classifier(args.out)  # the file reads back
    print(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
