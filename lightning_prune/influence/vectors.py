"""Last-layer influence vectors ``S_i = (1/n) H^{-1} g_i`` (Yang et al., ICLR 2023).

For a trained classifier whose final layer is an ``nn.Linear`` with weight ``[C, H]`` (and bias
``[C]``), the parameters of that layer are flattened row by row into ``theta`` of length
``d = C * (H + 1)`` (``C * H`` without a bias): entry ``c * (H + 1) + a`` is ``W[c, a]`` and entry
``c * (H + 1) + H`` is ``b[c]``. With ``h~_i = [h_i; 1]`` the input of that layer for sample ``i``
and ``p_i`` its softmax output,

* ``g_i = (p_i - y_i) (x) h~_i``, the gradient of the cross-entropy of sample ``i``;
* ``H = (1/n) sum_i (diag p_i - p_i p_i^T) (x) h~_i h~_i^T + lambda I``, the Hessian of the mean
  training loss plus an L2 term ``lambda/2 ||theta||^2`` (the damping; use the weight decay);
* ``S_i = (1/n) H^{-1} g_i``: to first order, ``theta_without_i - theta ~= S_i``, and removing a
  set ``P`` moves the parameters by ``sum_{i in P} S_i = S^T W`` (``W`` the 0/1 pruning indicator).

Everything is keyed by sample index, so the loader may visit samples in any order; under
``torch.distributed`` every rank walks its own shard and the per-sample features are gathered by
index (duplicates from a padding ``DistributedSampler`` dropped), so every rank ends with the same
``S`` as a single process would.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_prune.data.indexed import unpack_batch
from lightning_prune.distributed import GatherFn, RankRows, all_gather, first_occurrence
from lightning_prune.models.layers import find_last_linear

GatherSpec = str | GatherFn | Any | None


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass
class LastLayerInputs:
    """What one pass of the model over the data yields, in sample-index order.

    Attributes:
        features: ``[N, D]`` inputs of the final linear layer, with a trailing column of ones when
            the layer has a bias (``D = H + 1``; ``D = H`` without one).
        probs: ``[N, C]`` float64 softmax of the final layer's output.
        labels: ``[N]`` int64 class labels.
        layer: the name of the final linear layer inside the model.
        has_bias: whether that layer has a bias.
    """

    features: Tensor
    probs: Tensor
    labels: Tensor
    layer: str
    has_bias: bool

    @property
    def num_samples(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    @property
    def dim(self) -> int:
        """Number of last-layer parameters ``d = C * D``."""
        return int(self.probs.shape[1] * self.features.shape[1])


@dataclass
class InfluenceVectors:
    """Per-sample last-layer parameter influence, one row per training sample in index order.

    Attributes:
        S: ``[N, d]`` array; row ``i`` predicts ``theta_without_i - theta`` (see the module docs).
        labels: ``[N]`` int64 labels in index order.
        damping: the ``lambda`` added to the Hessian.
        solver: ``"cholesky"`` (exact inverse) or ``"cg"`` (preconditioned conjugate gradients).
        layer: name of the final linear layer the influence is computed for.
        has_bias: whether that layer has a bias (then ``d = C * (H + 1)``).
        info: diagnostics (timings, CG iterations and worst relative residual, ...).
    """

    S: np.ndarray
    labels: np.ndarray
    damping: float
    solver: str
    layer: str
    has_bias: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return int(self.S.shape[0])

    @property
    def dim(self) -> int:
        return int(self.S.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.info.get("num_classes", 0))

    def norms(self) -> np.ndarray:
        """``||S_i||_2`` per sample (float64)."""
        out = np.empty(self.num_samples)
        for start in range(0, self.num_samples, 8192):
            block = np.asarray(self.S[start : start + 8192], dtype=np.float64)
            out[start : start + block.shape[0]] = np.sqrt(np.einsum("ij,ij->i", block, block))
        return out


# ----------------------------------------------------------------------------------------------
# Finding the final layer and running the model
# ----------------------------------------------------------------------------------------------


def _last_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Linear]:
    return find_last_linear(model, layer, purpose="last-layer influence")


def _move_to(data: Any, device: torch.device) -> Any:
    if isinstance(data, Tensor):
        return data.to(device, non_blocking=True)
    if isinstance(data, dict):
        return {key: _move_to(value, device) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        moved = [_move_to(value, device) for value in data]
        return type(data)(moved) if not hasattr(data, "_fields") else type(data)(*moved)
    return data


def _model_device(model: nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _num_samples_of(loader: Iterable) -> int | None:
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return None
    try:
        return len(dataset)
    except TypeError:
        return None


def _forward_pass(
    model: nn.Module, loader: Iterable, linear: nn.Linear, name: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """This rank's rows of :func:`collect_last_layer_inputs`, in loader order: the final layer's
    input (seen through a forward hook), its softmax output (float64), the labels and the indices.
    The model's train/eval mode is restored afterwards."""
    device = _model_device(model)
    captured: list[tuple[Tensor, Tensor]] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append((inputs[0].detach(), output.detach()))

    handle = linear.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    features: list[Tensor] = []
    probs: list[Tensor] = []
    labels: list[Tensor] = []
    indices: list[Tensor] = []
    try:
        with torch.no_grad():
            for batch in loader:
                inputs, targets, index = unpack_batch(batch)
                captured.clear()
                output = model(_move_to(inputs, device))
                h, logits, targets = _checked_batch(name, captured, index, targets)
                if not indices:
                    _check_output_is_the_layers(name, output, logits)
                features.append(h.cpu())
                probs.append(torch.softmax(logits.to(torch.float64), dim=1).cpu())
                labels.append(targets)
                indices.append(index.to(torch.int64).cpu())
    finally:
        handle.remove()
        model.train(was_training)
    if not indices:
        raise ValueError("the data loader yielded no batches; pass the (unshuffled, unaugmented) training loader.")
    return torch.cat(features), torch.cat(probs), torch.cat(labels), torch.cat(indices)


def _check_output_is_the_layers(name: str, output: Any, logits: Tensor) -> None:
    """Refuse a model whose output is not its final linear layer's (checked on the first batch).

    The influence vectors take the softmax of that layer's output as the model's probabilities, so a
    ``forward`` that applies softmax, ReLU, temperature or anything else after it would be scored as
    another model. A non-tensor output (a dict, a tuple) is not compared."""
    if not isinstance(output, Tensor):
        return
    same = output.shape == logits.shape and torch.allclose(
        output.detach().to(torch.float64), logits.to(torch.float64), rtol=1e-4, atol=1e-5
    )
    if not same:
        raise ValueError(
            f"the model's output is not the output of its final linear layer {name!r} (its forward applies "
            "something after it, e.g. softmax or relu); last-layer influence reads that layer's output as the "
            "logits, so it would score another model. Return the raw logits from forward (apply softmax in the "
            "loss), or name the layer that produces them with layer='...'."
        )


def _checked_batch(
    name: str, captured: list[tuple[Tensor, Tensor]], index: Tensor, targets: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The final layer's input and output for one batch, and its labels as CPU int64, after the
    checks that catch the wrong layer, a broken model and labels outside the classes."""
    if len(captured) != 1:
        raise RuntimeError(
            f"the final linear layer {name!r} ran {len(captured)} times in one forward pass; "
            "last-layer influence needs it to run exactly once per batch. Name the classifier "
            "layer with layer='...'."
        )
    h, logits = captured[0]
    if h.dim() != 2 or logits.dim() != 2 or h.shape[0] != index.numel():
        raise ValueError(
            f"the final linear layer {name!r} saw input {tuple(h.shape)} and produced "
            f"{tuple(logits.shape)} for a batch of {index.numel()} samples; last-layer influence "
            "needs [batch, features] -> [batch, classes]. Name the classifier layer with layer='...'."
        )
    if not torch.isfinite(logits).all():
        raise ValueError(
            "the model produced NaN or infinite logits; influence vectors need a trained model "
            "with finite outputs. Check the checkpoint and the input normalisation."
        )
    targets = targets.to(torch.int64).cpu()
    num_classes = logits.shape[1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a {num_classes}-class final layer, got "
            f"[{int(targets.min())}, {int(targets.max())}]."
        )
    return h, logits, targets


def collect_last_layer_inputs(
    model: nn.Module,
    loader: Iterable,
    *,
    layer: str | None = None,
    num_samples: int | None = None,
    gather: GatherSpec = "auto",
) -> LastLayerInputs:
    """One pass of ``model`` (eval mode, no gradients) over ``loader``, recording per sample the
    input of the final linear layer, its softmax output and the label, keyed by sample index.

    ``loader`` yields ``(x, y, index)`` batches (see :class:`~lightning_prune.IndexedDataset`) in any
    order. ``num_samples`` defaults to ``len(loader.dataset)``; every index in ``[0, num_samples)``
    must be visited (on some rank). See :func:`influence_vectors` for ``gather``. The model's output
    must be the final linear layer's (checked on the first batch): a ``forward`` that applies softmax
    or another function after it is refused.
    """
    name, linear = _last_layer(model, layer)
    h_all, p_all, y_all, i_all = _forward_pass(model, loader, linear, name)
    gather_fn = resolve_gather(gather)
    if gather_fn is not None:
        rows = RankRows(gather_fn, i_all)
        h_all, p_all, y_all, i_all = rows.gather(h_all), rows.gather(p_all), rows.gather(y_all), rows.indices
    if num_samples is None:
        num_samples = _num_samples_of(loader)
    if num_samples is None:
        num_samples = int(i_all.max()) + 1
    order, missing = _first_occurrence_order(i_all, num_samples)
    if missing:
        raise ValueError(
            f"the loader visited {num_samples - missing} of {num_samples} samples ({missing} missing); influence "
            "vectors need every training sample once. Use a loader with drop_last=False over the full training "
            "set (and, under DDP, a DistributedSampler on every rank)."
        )
    h_all = h_all[order]
    if linear.bias is not None:
        h_all = torch.cat([h_all, torch.ones(h_all.shape[0], 1, dtype=h_all.dtype)], dim=1)
    return LastLayerInputs(
        features=h_all.contiguous(),
        probs=p_all[order].contiguous(),
        labels=y_all[order].contiguous(),
        layer=name,
        has_bias=linear.bias is not None,
    )


def _first_occurrence_order(indices: Tensor, num_samples: int) -> tuple[Tensor, int]:
    """Positions that put the rows in index order, keeping the first row seen for each index."""
    if indices.numel() and (indices.min() < 0 or indices.max() >= num_samples):
        raise ValueError(
            f"sample indices must lie in [0, {num_samples}), got [{int(indices.min())}, {int(indices.max())}]. "
            "Pass num_samples= the size of the full training set."
        )
    unique, first = first_occurrence(indices)
    position = torch.full((num_samples,), -1, dtype=torch.int64)
    position[unique] = first
    missing = int((position < 0).sum())
    return position, missing


# ----------------------------------------------------------------------------------------------
# Ranks
# ----------------------------------------------------------------------------------------------


def resolve_gather(gather: GatherSpec) -> GatherFn | None:
    """Turn the ``gather`` argument into a function (or ``None`` for a single process).

    ``"auto"``: ``torch.distributed.all_gather`` when a process group with more than one rank is
    initialised (Lightning's DDP strategies initialise one), else nothing. An object with an
    ``all_gather`` method (a Lightning ``Strategy``, ``Trainer.strategy``, a ``LightningModule``)
    uses that method. A callable is used as is. ``None`` never gathers.
    """
    if gather is None:
        return None
    if isinstance(gather, str):
        if gather != "auto":
            raise ValueError(f"gather={gather!r}: use 'auto', None, a callable or an object with all_gather().")
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return all_gather
        return None
    method = getattr(gather, "all_gather", None)
    if callable(method):
        # A Lightning strategy (``root_device``) or module (``device``) gathers on its own device.
        device = getattr(gather, "root_device", None) or getattr(gather, "device", None)
        if isinstance(device, torch.device):
            return lambda tensor: method(tensor.to(device))
        return method
    if callable(gather):
        return gather
    raise TypeError(f"gather must be 'auto', None, a callable or have all_gather(); got {type(gather).__name__}.")


# ----------------------------------------------------------------------------------------------
# Hessian, Hessian-vector products and the solve
# ----------------------------------------------------------------------------------------------


def _gradients(features: Tensor, probs: Tensor, labels: Tensor) -> Tensor:
    """``g_i = (p_i - y_i) (x) h~_i`` for a chunk, as ``[b, C * D]`` float64."""
    residual = probs.clone()
    residual[torch.arange(labels.numel()), labels] -= 1.0
    return (residual[:, :, None] * features[:, None, :]).reshape(features.shape[0], -1)


def last_layer_hessian(
    features: Tensor,
    probs: Tensor,
    damping: float,
    *,
    chunk_size: int = 4096,
    device: torch.device | str | None = None,
) -> Tensor:
    """The damped last-layer Hessian ``H`` (``[d, d]``, float64) in the flattening of the module docs.

    Built block by block, ``H[c, c'] = (1/n) sum_i (delta_cc' p_ic - p_ic p_ic') h~_i h~_i^T``, from
    chunks of samples; cost ``~ C^2/2 * n * D^2`` multiply-adds.
    """
    device = torch.device(device) if device is not None else features.device
    n, D = features.shape
    C = probs.shape[1]
    blocks = torch.zeros(C, D, C, D, dtype=torch.float64, device=device)
    for start in range(0, n, chunk_size):
        X = features[start : start + chunk_size].to(device=device, dtype=torch.float64)
        P = probs[start : start + chunk_size].to(device=device, dtype=torch.float64)
        for c in range(C):
            left = P[:, c : c + 1] * X  # [b, D]
            right = (P[:, c:, None] * X[:, None, :]).reshape(X.shape[0], -1)  # [b, (C-c) D]
            block_row = -(left.T @ right).reshape(D, C - c, D)  # -sum p_c p_c' h h^T
            block_row[:, 0, :] += left.T @ X  # + sum p_c h h^T on the diagonal block
            blocks[c, :, c:, :] += block_row
    for c in range(C):
        for c2 in range(c + 1, C):
            blocks[c2, :, c, :] = blocks[c, :, c2, :].T
    H = blocks.reshape(C * D, C * D)
    H /= n
    H.diagonal().add_(damping)
    return H


def hessian_vector_product(
    features: Tensor,
    probs: Tensor,
    vectors: Tensor,
    damping: float,
    *,
    chunk_size: int = 4096,
) -> Tensor:
    """``H v`` for a batch of vectors ``[R, d]`` without forming ``H`` (cost ``4 n C D R``)."""
    n, D = features.shape
    C = probs.shape[1]
    R = vectors.shape[0]
    V = vectors.reshape(R, C, D)
    out = torch.zeros_like(V)
    chunk_size = max(64, min(chunk_size, (1 << 25) // max(1, R * C)))  # keeps [R, chunk, C] near 256 MB
    for start in range(0, n, chunk_size):
        X = features[start : start + chunk_size].to(device=V.device, dtype=V.dtype)
        P = probs[start : start + chunk_size].to(device=V.device, dtype=V.dtype)
        U = torch.einsum("nd,rcd->rnc", X, V)  # V h~_i
        PU = P.unsqueeze(0) * U
        AU = PU - P.unsqueeze(0) * PU.sum(dim=2, keepdim=True)  # (diag p - p p^T) V h~_i
        out += torch.einsum("rnc,nd->rcd", AU, X)
    out /= n
    out += damping * V
    return out.reshape(R, C * D)


class _KroneckerPreconditioner:
    """``(E[A] (x) E[h~ h~^T] + lambda I)^{-1}``, applied through eigendecompositions of the factors."""

    def __init__(self, features: Tensor, probs: Tensor, damping: float, device: torch.device, chunk_size: int) -> None:
        n, D = features.shape
        C = probs.shape[1]
        A = torch.zeros(C, C, dtype=torch.float64, device=device)
        B = torch.zeros(D, D, dtype=torch.float64, device=device)
        for start in range(0, n, chunk_size):
            X = features[start : start + chunk_size].to(device=device, dtype=torch.float64)
            P = probs[start : start + chunk_size].to(device=device, dtype=torch.float64)
            A += torch.diag(P.sum(0)) - P.T @ P
            B += X.T @ X
        self.la, self.Qa = torch.linalg.eigh(A / n)
        self.lb, self.Qb = torch.linalg.eigh(B / n)
        self.scale = 1.0 / (self.la.clamp_min(0)[:, None] * self.lb.clamp_min(0)[None, :] + damping)
        self.C, self.D = C, D

    def __call__(self, R: Tensor) -> Tensor:
        V = R.reshape(R.shape[0], self.C, self.D)
        inner = self.Qa.T @ V @ self.Qb
        return (self.Qa @ (inner * self.scale) @ self.Qb.T).reshape(R.shape)


def _block_pcg(
    matvec: Callable[[Tensor], Tensor],
    precondition: Callable[[Tensor], Tensor],
    B: Tensor,
    *,
    rtol: float,
    max_iter: int,
) -> tuple[Tensor, int, float]:
    """Preconditioned CG run independently on each row of ``B`` (``H X = B``), vectorised."""
    X = torch.zeros_like(B)
    R = B.clone()
    b_norm = B.norm(dim=1).clamp_min(torch.finfo(B.dtype).tiny)
    active = (R.norm(dim=1) / b_norm) > rtol
    Z = precondition(R)
    Pdir = Z.clone()
    rz = (R * Z).sum(1)
    iterations = 0
    while bool(active.any()) and iterations < max_iter:
        iterations += 1
        HP = matvec(Pdir)
        curvature = (Pdir * HP).sum(1)
        alpha = torch.where(active, rz / curvature.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(rz))
        X += alpha[:, None] * Pdir
        R -= alpha[:, None] * HP
        active = active & ((R.norm(dim=1) / b_norm) > rtol)
        Z = precondition(R)
        rz_new = (R * Z).sum(1)
        beta = torch.where(active, rz_new / rz.clamp_min(torch.finfo(B.dtype).tiny), torch.zeros_like(rz))
        Pdir = Z + beta[:, None] * Pdir
        rz = rz_new
    worst = float(((B - matvec(X)).norm(dim=1) / b_norm).max())
    return X, iterations, worst


def influence_from_inputs(
    inputs: LastLayerInputs,
    damping: float,
    *,
    exact_max_dim: int = 10_000,
    chunk_size: int = 2048,
    cg_tol: float = 1e-8,
    cg_max_iter: int = 500,
    cg_block: int = 256,
    dtype: np.dtype | type = np.float32,
    device: torch.device | str | None = None,
) -> InfluenceVectors:
    """``S_i = (1/n) H^{-1} g_i`` for every sample, from recorded last-layer inputs.

    The exact path (``d <= exact_max_dim``) forms ``H`` in float64 and solves with its Cholesky
    factor; beyond that, each ``S_i`` is found with conjugate gradients, preconditioned with the
    Kronecker-factored approximation of ``H``, using Hessian-vector products from the stored
    features and probabilities (``H`` is never formed). ``dtype`` is the storage type of ``S``.
    """
    if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping > 0):
        raise ValueError(
            f"damping must be a positive finite number (got {damping!r}): the softmax Hessian is singular "
            "without it. Use the weight decay the model was trained with, e.g. damping=5e-4."
        )
    device = torch.device(device) if device is not None else torch.device("cpu")
    n = inputs.num_samples
    d = inputs.dim
    S = np.empty((n, d), dtype=dtype)
    info: dict[str, Any] = {"num_classes": inputs.num_classes, "feature_dim": int(inputs.features.shape[1]), "dim": d}
    started = time.perf_counter()
    if d <= exact_max_dim:
        _cholesky_influence(inputs, S, damping, device=device, chunk_size=chunk_size, info=info)
        solver = "cholesky"
    else:
        cg = _CGSettings(tol=cg_tol, max_iter=cg_max_iter, block=cg_block)
        _cg_influence(inputs, S, damping, device=device, chunk_size=chunk_size, cg=cg, info=info)
        solver = "cg"
    info["solve_s"] = time.perf_counter() - started
    return InfluenceVectors(
        S=S,
        labels=inputs.labels.numpy().astype(np.int64),
        damping=float(damping),
        solver=solver,
        layer=inputs.layer,
        has_bias=inputs.has_bias,
        info=info,
    )


@dataclass(frozen=True)
class _CGSettings:
    """Conjugate gradients: relative tolerance, iteration cap and ``block``, the number of samples
    whose right-hand sides are solved together."""

    tol: float
    max_iter: int
    block: int


def _cholesky_influence(
    inputs: LastLayerInputs,
    S: np.ndarray,
    damping: float,
    *,
    device: torch.device,
    chunk_size: int,
    info: dict[str, Any],
) -> None:
    """Fill ``S`` on the exact path: form ``H`` in float64 and solve with its Cholesky factor."""
    features, probs, labels = inputs.features, inputs.probs, inputs.labels
    n = inputs.num_samples
    started = time.perf_counter()
    H = last_layer_hessian(features, probs, damping, chunk_size=max(256, chunk_size), device=device)
    info["hessian_s"] = time.perf_counter() - started
    L, failure = torch.linalg.cholesky_ex(H)
    if int(failure) != 0:
        raise ValueError(
            f"the damped last-layer Hessian is not positive definite (damping={damping}); increase damping."
        )
    del H  # d x d float64: free it before the gradient chunks are allocated
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        G = _gradients(
            features[start:stop].to(device=device, dtype=torch.float64),
            probs[start:stop].to(device=device, dtype=torch.float64),
            labels[start:stop].to(device),
        )
        S[start:stop] = (torch.cholesky_solve(G.T, L).T / n).cpu().numpy()


def _cg_influence(
    inputs: LastLayerInputs,
    S: np.ndarray,
    damping: float,
    *,
    device: torch.device,
    chunk_size: int,
    cg: _CGSettings,
    info: dict[str, Any],
) -> None:
    """Fill ``S`` with preconditioned block conjugate gradients; warns when they stop short of the
    tolerance."""
    n = inputs.num_samples
    X_all = inputs.features.to(device=device)
    P_all = inputs.probs.to(device=device, dtype=torch.float64)
    labels = inputs.labels
    preconditioner = _KroneckerPreconditioner(X_all, P_all, damping, device, chunk_size)
    worst, max_iters = 0.0, 0
    for start in range(0, n, cg.block):
        stop = min(n, start + cg.block)
        G = _gradients(X_all[start:stop].to(torch.float64), P_all[start:stop], labels[start:stop].to(device))
        X, iters, residual = _block_pcg(
            lambda V: hessian_vector_product(X_all, P_all, V, damping, chunk_size=chunk_size),
            preconditioner,
            G,
            rtol=cg.tol,
            max_iter=cg.max_iter,
        )
        S[start:stop] = (X / n).cpu().numpy()
        worst, max_iters = max(worst, residual), max(max_iters, iters)
    info.update(cg_max_iterations=max_iters, cg_worst_relative_residual=worst)
    if worst > max(cg.tol * 100, 1e-6):
        warnings.warn(
            f"conjugate gradients stopped at relative residual {worst:.2e} after {cg.max_iter} iterations "
            f"(tolerance {cg.tol:.0e}); the influence vectors are approximate. Raise cg_max_iter or damping.",
            RuntimeWarning,
            stacklevel=3,  # the caller of influence_from_inputs
        )


def influence_vectors(
    model: nn.Module,
    loader: Iterable,
    *,
    damping: float,
    layer: str | None = None,
    num_samples: int | None = None,
    exact_max_dim: int = 10_000,
    chunk_size: int = 2048,
    cg_tol: float = 1e-8,
    cg_max_iter: int = 500,
    dtype: np.dtype | type = np.float32,
    device: torch.device | str | None = None,
    gather: GatherSpec = "auto",
) -> InfluenceVectors:
    """Last-layer influence vectors of every training sample (rows in sample-index order).

    Args:
        model: the trained classifier (a ``LightningModule`` or any ``nn.Module``); run in eval mode
            without gradients, its training mode restored afterwards.
        loader: yields ``(x, y, index)`` batches covering the training set once (any order). Use a
            loader without augmentation: the influence is that of the samples as stored.
        damping: ``lambda`` added to the Hessian; use the training weight decay (> 0).
        layer: name of the final ``nn.Linear`` (default: the model's last ``nn.Linear``).
        num_samples: size of the full training set (default ``len(loader.dataset)``).
        exact_max_dim: largest ``d`` solved exactly (Cholesky, float64; ``8 d^2`` bytes); larger
            ``d`` uses preconditioned conjugate gradients with Hessian-vector products.
        chunk_size: samples per chunk in the Hessian and solve.
        cg_tol, cg_max_iter: CG relative-residual tolerance and iteration cap.
        dtype: storage type of ``S`` (float32 halves memory; use float64 for checks).
        device: where ``H`` and the solves are computed (default CPU; ``"cuda"`` for speed).
        gather: how ranks exchange their shards: ``"auto"`` (``torch.distributed`` when initialised),
            a Lightning strategy (anything with ``all_gather``), a callable with that contract, or
            ``None``. Under DDP give each rank a loader with a ``DistributedSampler`` so that the
            forward passes are shared out; a loader over the full set on every rank also works.
    """
    inputs = collect_last_layer_inputs(model, loader, layer=layer, num_samples=num_samples, gather=gather)
    return influence_from_inputs(
        inputs,
        damping,
        exact_max_dim=exact_max_dim,
        chunk_size=chunk_size,
        cg_tol=cg_tol,
        cg_max_iter=cg_max_iter,
        dtype=dtype,
        device=device,
    )
