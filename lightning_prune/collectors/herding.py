"""Herding (Welling, ICML 2009), per class, as iCaRL defines it for exemplar sets.

Within each class, greedy kernel herding with a linear kernel orders the samples so that the mean
of the first t picked features stays as close as possible to the class mean: at step t it picks

    ``argmin_i || (t + 1) * mu - (sum of the t samples picked so far + h_i) ||_2``

among the samples not yet picked (lowest index on ties). Each step is one matrix-vector product
over the class, so a class of n samples costs ``O(n^2 H)``.

Scores: sample i at herding position ``r_i`` (0 = first pick) in a class of ``n_c`` samples scores
``1 - r_i / n_c``. So:

* ``select(scores, strategy="class_balanced")`` keeps exactly each class's first herding picks;
* ``strategy="topk"`` keeps, across classes, the samples earliest in their class's order relative
  to its size: each class keeps about its share of the data.

``scores.extras["herding_rank"]`` holds ``r_i``.

DeepCore's ``Herding`` is not this: its code picks, at each step, the sample *farthest* from the
running target (an argmax where the definition above has an argmin), so its selections differ.
This collector follows the definition (Welling; iCaRL), not DeepCore's code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.features import FeatureCollector, class_members
from lightning_prune.selection.meaning import ScoreMeaning


def herding_order(features: Tensor) -> Tensor:
    """The herding order of the rows of ``features`` (``[n, H]``): row indices, first pick first."""
    points = features.float()
    count = points.shape[0]
    mean = points.mean(dim=0)
    norms_sq = points.pow(2).sum(dim=1)
    total = torch.zeros_like(mean)
    taken = torch.zeros(count, dtype=torch.bool, device=points.device)
    order = torch.empty(count, dtype=torch.int64, device=points.device)
    for step in range(count):
        target = (step + 1) * mean - total
        # ||target - h||^2 minus the ||target||^2 every candidate shares
        cost = norms_sq - 2.0 * (points @ target)
        pick = cost.masked_fill(taken, float("inf")).argmin()
        order[step] = pick
        taken[pick] = True
        total += points[pick]
    return order


class Herding(FeatureCollector):
    """Per-class herding order of the penultimate features; higher = earlier pick = keep.

    Args:
        **kwargs: ``source``, ``dataloader``, ``epoch``, ``precision``, ``feature_layer``, ...: see
            :class:`~lightning_prune.collectors.features.FeatureCollector`.

    Use ``select(..., strategy="class_balanced")`` for the herding coreset proper.
    """

    method = "herding"
    score_meaning = ScoreMeaning.PREFERENCE

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    @override
    def score_features(self, features: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        num_samples = features.shape[0]
        scores = torch.empty(num_samples, dtype=torch.float64)
        ranks = torch.empty(num_samples, dtype=torch.int64)
        for _, members in class_members(labels):
            order = members[herding_order(features[members])].cpu()
            position = torch.arange(order.numel(), dtype=torch.int64)
            ranks[order] = position
            scores[order] = 1.0 - position.double() / order.numel()
        return scores, {"herding_rank": ranks}
