"""Seeded k-means (k-means++ initialisation, Lloyd iterations) in torch, for prototypicality.

Written for embeddings of up to millions of rows stored in float16: every pass over the points
converts one chunk at a time to float32, so the working memory is ``chunk_size x max(H, k)``
floats beyond the input itself. Runs on the points' device.

Determinism: the only randomness is the k-means++ draw, taken from a CPU ``torch.Generator``
seeded with ``seed`` (so it does not depend on the device's generator); ties in assignments go to
the lowest centroid index, and an empty cluster is re-seeded with the point farthest from its
centroid (lowest index on ties). Equal inputs and seed give equal results.

``metric="cosine"`` is spherical k-means: points and centroids are unit-normalised, points are
assigned to the centroid of highest cosine similarity, and the distance is ``1 - cosine``.
``metric="euclidean"`` is ordinary k-means with the Euclidean distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_prune.collectors.arguments import is_integer

METRICS = ("euclidean", "cosine")


@dataclass
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes:
        centroids: ``[k, H]`` float32 (unit length for the cosine metric).
        assignment: ``[N]`` int64, the centroid each point belongs to.
        distance: ``[N]`` float32, each point's distance to its centroid (Euclidean, or ``1 - cosine``).
        iterations: Lloyd iterations run.
        converged: whether the assignment stopped changing before ``iterations`` ran out.
    """

    centroids: Tensor
    assignment: Tensor
    distance: Tensor
    iterations: int
    converged: bool


def _chunks(count: int, size: int) -> range:
    return range(0, count, size)


def _prepare(points: Tensor, start: int, stop: int, metric: str) -> Tensor:
    chunk = points[start:stop].float()
    return torch.nn.functional.normalize(chunk, dim=1) if metric == "cosine" else chunk


def _assign(
    points: Tensor, centroids: Tensor, metric: str, chunk_size: int, exact: bool = False
) -> tuple[Tensor, Tensor]:
    """Nearest centroid of every point, and the distance to it (``exact``: computed directly)."""
    count = points.shape[0]
    assignment = torch.empty(count, dtype=torch.int64, device=points.device)
    distance = torch.empty(count, dtype=torch.float32, device=points.device)
    centroid_sq = centroids.pow(2).sum(dim=1)
    for start in _chunks(count, chunk_size):
        chunk = _prepare(points, start, start + chunk_size, metric)
        if metric == "cosine":
            nearest = (chunk @ centroids.T).argmax(dim=1)
            gap = 1.0 - (chunk * centroids[nearest]).sum(dim=1)
        else:
            # ||x||^2 is the same for every centroid, so ranking by ||c||^2 - 2 x.c is enough
            partial, nearest = (centroid_sq - 2.0 * (chunk @ centroids.T)).min(dim=1)
            if exact:  # the reported distances are free of the expansion's cancellation
                gap = (chunk - centroids[nearest]).norm(dim=1)
            else:  # good enough to find the farthest points when re-seeding empty clusters
                gap = (partial + chunk.pow(2).sum(dim=1)).clamp_min(0).sqrt()
        assignment[start : start + chunk.shape[0]] = nearest
        distance[start : start + chunk.shape[0]] = gap
    return assignment, distance


def _squared_gap(points: Tensor, centre: Tensor, metric: str, chunk_size: int) -> Tensor:
    out = torch.empty(points.shape[0], dtype=torch.float32, device=points.device)
    for start in _chunks(points.shape[0], chunk_size):
        chunk = _prepare(points, start, start + chunk_size, metric)
        out[start : start + chunk.shape[0]] = (chunk - centre).pow(2).sum(dim=1)
    return out


def _kmeans_plus_plus(points: Tensor, k: int, metric: str, generator: torch.Generator, chunk_size: int) -> Tensor:
    count = points.shape[0]
    first = int(torch.randint(count, (1,), generator=generator))
    centroids = [_prepare(points, first, first + 1, metric)[0]]
    closest = _squared_gap(points, centroids[0], metric, chunk_size)
    # float64 prefix sums keep the draw exact over millions of points (MPS has no float64)
    wide = torch.float32 if points.device.type == "mps" else torch.float64
    for _ in range(1, k):
        cumulative = torch.cumsum(closest.to(wide), dim=0)
        total = float(cumulative[-1])
        threshold = float(torch.rand(1, generator=generator, dtype=torch.float64)) * total
        if total > 0:
            key = torch.tensor([threshold], dtype=wide, device=points.device)
            pick = int(torch.searchsorted(cumulative, key, right=True))
            pick = min(pick, count - 1)
        else:  # every point sits on a centroid already: any choice is as good
            pick = int(torch.randint(count, (1,), generator=generator))
        centroids.append(_prepare(points, pick, pick + 1, metric)[0])
        closest = torch.minimum(closest, _squared_gap(points, centroids[-1], metric, chunk_size))
    return torch.stack(centroids)


def _update(points: Tensor, assignment: Tensor, distance: Tensor, k: int, metric: str, chunk_size: int) -> Tensor:
    hidden = points.shape[1]
    sums = torch.zeros(k, hidden, dtype=torch.float32, device=points.device)
    counts = torch.zeros(k, dtype=torch.float32, device=points.device)
    for start in _chunks(points.shape[0], chunk_size):
        chunk = _prepare(points, start, start + chunk_size, metric)
        members = assignment[start : start + chunk.shape[0]]
        sums.index_add_(0, members, chunk)
        counts.index_add_(0, members, torch.ones_like(members, dtype=torch.float32))
    centroids = sums / counts.clamp_min(1).unsqueeze(1)
    empty = (counts == 0).nonzero().reshape(-1).tolist()
    if empty:
        # stable descending sort: the farthest points first, lower index first on ties
        farthest = torch.sort(distance, descending=True, stable=True).indices[: len(empty)].tolist()
        for cluster, point in zip(empty, farthest, strict=False):
            centroids[cluster] = _prepare(points, point, point + 1, metric)[0]
    if metric == "cosine":
        centroids = torch.nn.functional.normalize(centroids, dim=1)
    return centroids


def kmeans(
    points: Tensor,
    num_clusters: int,
    *,
    seed: int = 0,
    iterations: int = 100,
    metric: str = "euclidean",
    chunk_size: int = 65536,
) -> KMeansResult:
    """Cluster the rows of ``points`` (``[N, H]``, any float dtype) into ``num_clusters`` clusters.

    k-means++ initialisation from ``seed``, then Lloyd iterations until the assignment no longer
    changes or ``iterations`` have run. At convergence every point is assigned to its nearest
    centroid and every centroid is the mean (for the cosine metric: the normalised mean) of its points.
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, H] tensor of points, got shape {tuple(points.shape)}.")
    if not points.is_floating_point():
        raise TypeError(f"kmeans needs floating-point points, got {points.dtype}.")
    if metric not in METRICS:
        raise ValueError(f"kmeans metric must be one of {METRICS}, got {metric!r}.")
    if not is_integer(num_clusters) or not 1 <= num_clusters <= points.shape[0]:
        raise ValueError(
            f"kmeans num_clusters must be an integer between 1 and the number of points ({points.shape[0]}), "
            f"got {num_clusters!r}."
        )
    if not is_integer(iterations) or iterations < 1:
        raise ValueError(f"kmeans iterations must be a positive integer, got {iterations!r}.")
    if not is_integer(chunk_size) or chunk_size < 1:
        raise ValueError(f"kmeans chunk_size must be a positive integer, got {chunk_size!r}.")
    if not is_integer(seed):
        raise ValueError(f"kmeans seed must be an integer, got {seed!r}.")
    num_clusters, iterations, chunk_size = int(num_clusters), int(iterations), int(chunk_size)
    generator = torch.Generator().manual_seed(int(seed))
    centroids = _kmeans_plus_plus(points, num_clusters, metric, generator, chunk_size)
    assignment, distance = _assign(points, centroids, metric, chunk_size)
    converged = False
    run = 0
    while run < iterations:
        run += 1
        centroids = _update(points, assignment, distance, num_clusters, metric, chunk_size)
        new_assignment, distance = _assign(points, centroids, metric, chunk_size)
        if torch.equal(new_assignment, assignment):
            converged = True
            break
        assignment = new_assignment
    distance = _assign(points, centroids, metric, chunk_size, exact=True)[1]
    return KMeansResult(
        centroids=centroids, assignment=assignment, distance=distance, iterations=run, converged=converged
    )
