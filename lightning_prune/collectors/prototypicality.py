"""Prototypicality (Sorscher et al., "Beyond neural scaling laws", NeurIPS 2022).

Sorscher et al. measure how prototypical a sample is by its distance, in an embedding space, to
the nearest k-means centroid ("prototype"): close = easy/prototypical, far = hard. Two variants:

* ``per_class=True`` (default): k-means within each class (``num_clusters`` per class, default 1,
  when the prototype is the class centroid: the paper's *supervised prototypes* metric);
* ``per_class=False``: one k-means over all samples, labels unused (the paper's *self-supervised
  prototypes* metric, there with k = the number of classes on ImageNet and a self-supervised
  embedding; here the embedding is the trained model's penultimate features).

Distances are cosine distances ``1 - cos(h, c)`` by default, as in the paper (spherical k-means on
unit-normalised features); ``metric="euclidean"`` uses plain k-means. k-means is this library's
own (:func:`lightning_prune.collectors.kmeans.kmeans`), seeded.

Orientation: the paper's rule is to keep the **hard** (far) samples when data is plentiful and the
easy ones when it is scarce (aggressive pruning of small data sets). ``keep="hard"`` (default)
scores the distance, ``keep="easy"`` its negative; higher = keep either way.
``scores.extras["prototype_distance"]`` holds the distance, ``extras["cluster"]`` the prototype
(``class * num_clusters + j`` per class).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from typing_extensions import override

from lightning_prune.collectors.arguments import is_integer
from lightning_prune.collectors.features import FeatureCollector, class_members
from lightning_prune.collectors.kmeans import METRICS, kmeans
from lightning_prune.selection.meaning import MeaningBy, ScoreMeaning

_KEEP = ("hard", "easy")


class Prototypicality(FeatureCollector):
    """Distance to the nearest k-means prototype; ``keep="hard"``: far = keep.

    Args:
        num_clusters: prototypes per class (``per_class=True``, default 1) or in all
            (``per_class=False``, default: the number of classes).
        per_class: cluster each class separately (supervised) or all samples together.
        metric: ``"cosine"`` (default, paper) or ``"euclidean"``.
        keep: ``"hard"`` (default: far from the prototype = keep) or ``"easy"``.
        seed: seed of the k-means++ initialisation.
        iterations: maximum Lloyd iterations.
        **kwargs: ``source``, ``dataloader``, ``epoch``, ``precision``, ``feature_layer``, ...: see
            :class:`~lightning_prune.collectors.features.FeatureCollector`.
    """

    method = "prototypicality"
    score_meaning = MeaningBy("keep", {"hard": ScoreMeaning.DIFFICULTY, "easy": ScoreMeaning.EASINESS}, "hard")

    def __init__(
        self,
        num_clusters: int | None = None,
        *,
        per_class: bool = True,
        metric: str = "cosine",
        keep: str = "hard",
        seed: int = 0,
        iterations: int = 100,
        **kwargs: Any,
    ) -> None:
        if num_clusters is not None and (not is_integer(num_clusters) or num_clusters < 1):
            raise ValueError(f"Prototypicality num_clusters must be a positive integer or None, got {num_clusters!r}.")
        if metric not in METRICS:
            raise ValueError(f"Prototypicality metric must be one of {METRICS}, got {metric!r}.")
        if keep not in _KEEP:
            raise ValueError(
                f"Prototypicality keep must be 'hard' (far from the prototype; plentiful data) or 'easy' (scarce "
                f"data), got {keep!r}."
            )
        if not is_integer(iterations) or iterations < 1:
            raise ValueError(f"Prototypicality iterations must be a positive integer, got {iterations!r}.")
        if not is_integer(seed):
            raise ValueError(f"Prototypicality seed must be an integer, got {seed!r}.")
        self.num_clusters = None if num_clusters is None else int(num_clusters)
        self.per_class = bool(per_class)
        self.metric = metric
        self.keep = keep
        self.seed = int(seed)
        self.iterations = int(iterations)
        super().__init__(**kwargs)

    @override
    def score_features(self, features: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.per_class:
            per_class = self.num_clusters or 1
            distance = torch.empty(features.shape[0], dtype=torch.float32, device=features.device)
            cluster = torch.empty(features.shape[0], dtype=torch.int64, device=features.device)
            for label, members in class_members(labels):
                # a class smaller than k gets one prototype per sample
                result = kmeans(
                    features[members],
                    min(per_class, members.numel()),
                    seed=self.seed,
                    iterations=self.iterations,
                    metric=self.metric,
                )
                distance[members] = result.distance
                cluster[members] = label * per_class + result.assignment
        else:
            total = self.num_clusters or self._state_num_classes
            if total > features.shape[0]:
                raise ValueError(
                    f"Prototypicality(num_clusters={total}) asks for more prototypes than the {features.shape[0]} "
                    "samples; lower num_clusters."
                )
            result = kmeans(features, total, seed=self.seed, iterations=self.iterations, metric=self.metric)
            distance, cluster = result.distance, result.assignment
        scores = distance if self.keep == "hard" else -distance
        return scores, {"prototype_distance": distance, "cluster": cluster}
