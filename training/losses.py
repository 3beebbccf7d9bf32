"""Losses for multi-task training with deep supervision.

*Marginal (masked) loss* (Moeskops et al. 2016; Shi et al. 2021): a sample of task T is only
annotated for T's labels. The probabilities of every channel T does not label are merged into
T's background (log-sum-exp of their logits), and Dice + cross-entropy are computed on the
merged ``1 + |T|`` class distribution. Predicting, say, a heart label on an abdomen CT's
background then costs exactly as much as predicting background there.

*Deep supervision* (Dou et al. 2017): ``loss = main + Σ_d η_d · side_d``, with η_d decaying
over training.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from monai.losses import DiceCELoss
from torch import Tensor, nn

__all__ = ["merge_unlabelled", "MarginalDiceCELoss", "side_output_weights", "DeepSupervisionLoss"]


def merge_unlabelled(logits: Tensor, channels: Sequence[int]) -> Tensor:
    """Logits ``[B, C, ...]`` -> ``[B, 1 + K, ...]`` for a task labelling ``channels[1:]``
    (``channels[0]`` is background): the new background is the log-sum-exp of the background
    and of every channel the task does not label, so its softmax probability is their sum."""
    labelled = list(channels[1:])
    unlabelled = [c for c in range(logits.shape[1]) if c not in labelled]
    background = torch.logsumexp(logits[:, unlabelled], dim=1, keepdim=True)
    return torch.cat([background, logits[:, labelled]], dim=1)


class MarginalDiceCELoss(nn.Module):
    """Dice + cross-entropy (MONAI ``DiceCELoss``, softmax, Dice over the foreground classes)
    on each task's merged distribution, averaged over the tasks present in the batch.

    ``task_channels``: ``{task: [0, value_1, ..., value_K]}`` in the union label space.
    ``forward(logits [B, C, ...], target [B, ...] union values, tasks [B names])``."""

    def __init__(self, task_channels: dict[str, Sequence[int]]):
        super().__init__()
        self.task_channels = {name: list(channels) for name, channels in task_channels.items()}
        num_classes = max(max(c) for c in self.task_channels.values()) + 1
        self.lookups = {}
        for name, channels in self.task_channels.items():
            lookup = torch.zeros(num_classes, dtype=torch.long)
            lookup[torch.tensor(channels)] = torch.arange(len(channels))
            self.lookups[name] = lookup
        self.dice_ce = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True,
                                  batch=True)

    def forward(self, logits: Tensor, target: Tensor, tasks: Sequence[str]) -> Tensor:
        losses = []
        for name in dict.fromkeys(tasks):  # first-seen order: deterministic
            index = torch.tensor([i for i, t in enumerate(tasks) if t == name],
                                 device=logits.device)
            merged = merge_unlabelled(logits.index_select(0, index).float(),
                                      self.task_channels[name])
            local = self.lookups[name].to(target.device)[target.index_select(0, index)]
            losses.append(self.dice_ce(merged, local[:, None]))
        return torch.stack(losses).mean()


def side_output_weights(initial: Sequence[float], step: int, total_steps: int,
                        schedule: str) -> list[float]:
    """η_d at ``step``: ``fixed``; ``linear`` from ``initial`` to 0 at ``total_steps``;
    ``exponential`` ``initial · 0.01^(step/total_steps)``."""
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    if schedule == "fixed":
        factor = 1.0
    elif schedule == "linear":
        factor = 1.0 - progress
    elif schedule == "exponential":
        factor = math.pow(0.01, progress)
    else:
        raise ValueError(f"side-output weight schedule {schedule!r}: use fixed, linear or "
                         f"exponential")
    return [eta * factor for eta in initial]


class DeepSupervisionLoss(nn.Module):
    """``base(main) + Σ_d η_d · base(side_d)``; returns the total and the per-output terms."""

    def __init__(self, base: MarginalDiceCELoss):
        super().__init__()
        self.base = base

    def forward(self, main: Tensor, sides: Sequence[Tensor], target: Tensor,
                tasks: Sequence[str], weights: Sequence[float]) -> tuple[Tensor, list[float]]:
        if len(weights) != len(sides):
            raise ValueError(f"{len(sides)} side outputs but {len(weights)} weights")
        main_loss = self.base(main, target, tasks)
        total, terms = main_loss, [float(main_loss.detach())]
        for eta, side in zip(weights, sides):  # also at η = 0: DDP wants every gradient
            side_loss = self.base(side, target, tasks)
            total = total + eta * side_loss
            terms.append(float(side_loss.detach()))
        return total, terms
