"""The training-curves PNG: loss per step and validation Dice per task."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

__all__ = ["plot_training_curves"]


def plot_training_curves(log_csv: Path, validation_csv: Path, png: Path) -> Path:
    """Plot ``log.csv`` (step, loss, ...) and ``validation.csv`` (step, task, label, dice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = [], []
    with open(log_csv) as stream:
        for row in csv.DictReader(stream):
            steps.append(int(row["step"]))
            losses.append(float(row["loss"]))
    dice: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    if validation_csv.exists():
        with open(validation_csv) as stream:
            for row in csv.DictReader(stream):
                dice[row["task"]][int(row["step"])].append(float(row["dice"]))

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, losses, lw=0.5, alpha=0.4, color="tab:blue", label="loss")
    window = max(1, len(losses) // 40)
    if len(losses) > window:
        smooth = [sum(losses[i - window:i]) / window for i in range(window, len(losses) + 1)]
        left.plot(steps[window - 1:], smooth, color="tab:blue", label=f"mean of {window}")
    left.set(xlabel="step", ylabel="loss (main + side outputs)", title="Training loss")
    left.legend()
    for task, by_step in dice.items():
        ordered = sorted(by_step)
        right.plot(ordered, [sum(by_step[s]) / len(by_step[s]) for s in ordered], marker="o",
                   label=task)
    right.set(xlabel="step", ylabel="mean Dice", ylim=(0, 1), title="Validation Dice per task")
    right.grid(alpha=0.3)
    if dice:
        right.legend()
    figure.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png
