"""Moderate-DS: moderate coreset (Xia et al., ICLR 2023).

Each sample's distance to its class centre in feature space, ``d_i = || h_i - m_{y_i} ||_2``, where
the centre ``m_c`` is the coordinate-wise median of class c's features (as the official code does;
``centre="mean"`` uses the class mean). Moderate-DS keeps the samples whose distance is closest to
the median distance ``M`` over the whole data set, dropping both the easiest (closest to the
centre) and the hardest (farthest) ones:

    ``score_i = -| d_i - M |``,   higher = more moderate = keep.

So ``select(scores, strategy="topk")`` keeps the band of distances around ``M`` that the paper
selects. ``scores.extras["distance"]`` holds ``d_i``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.features import FeatureCollector, class_members, median
from lightning_prune.selection.meaning import ScoreMeaning

_CENTRES = ("median", "mean")


class Moderate(FeatureCollector):
    """Negative gap between a sample's distance to its class centre and the median such distance.

    Args:
        centre: ``"median"`` (default; official code: coordinate-wise median) or ``"mean"``.
        **kwargs: ``source``, ``dataloader``, ``epoch``, ``precision``, ``feature_layer``, ...: see
            :class:`~lightning_prune.collectors.features.FeatureCollector`.
    """

    method = "moderate"
    score_meaning = ScoreMeaning.PREFERENCE

    def __init__(self, *, centre: str = "median", **kwargs: Any) -> None:
        if centre not in _CENTRES:
            raise ValueError(f"Moderate centre must be one of {_CENTRES}, got {centre!r}.")
        self.centre = centre
        super().__init__(**kwargs)

    @override
    def score_features(self, features: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        distance = torch.empty(features.shape[0], dtype=torch.float32, device=features.device)
        for _, members in class_members(labels):
            points = features[members].float()
            centre = median(points, dim=0) if self.centre == "median" else points.mean(dim=0)
            distance[members] = (points - centre).norm(dim=1)
        return -(distance - median(distance)).abs(), {"distance": distance}
