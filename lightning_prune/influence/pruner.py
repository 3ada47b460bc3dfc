"""``InfluencePruner``: optimisation-based dataset pruning from last-layer influence (Yang et al. 2023).

Example::

    >>> import lightning as L
    >>> import lightning_prune as lp
    >>> dm = lp.DigitsDataModule(batch_size=256)
    >>> quiet = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
    ...              enable_model_summary=False)
    >>> model = lp.Classifier(lp.SmallCNN())
    >>> L.Trainer(max_epochs=2, **quiet).fit(model, datamodule=dm)
    >>> pruner = lp.InfluencePruner(damping=5e-4, time_limit=120)
    >>> selection = pruner.select(model, dm, prune_ratio=0.4)  # or epsilon=...
    >>> len(selection)  # 1078 - round(0.4 * 1078)
    647
    >>> solution = pruner.last_solution
    >>> solution.objective >= 0, isinstance(solution.method, str)
    (True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_prune.influence.solvers import PruningSolution, solve_cardinality, solve_epsilon
from lightning_prune.influence.vectors import GatherSpec, InfluenceVectors, influence_vectors
from lightning_prune.selection.files import label_fingerprint
from lightning_prune.selection.selection import Selection


def _training_loader(data: Any, batch_size: int) -> Iterable:
    """A loader of ``(x, y, index)`` batches from a DataLoader, a datamodule or a map-style dataset."""
    if isinstance(data, DataLoader):
        return data
    if hasattr(data, "train_dataloader") and callable(data.train_dataloader):
        try:
            return data.train_dataloader()
        except Exception as first_error:  # most often: setup() has not run yet
            if not (hasattr(data, "setup") and callable(data.setup)):
                raise
            if hasattr(data, "prepare_data") and callable(data.prepare_data):
                data.prepare_data()
            data.setup("fit")
            try:
                return data.train_dataloader()
            except Exception:
                raise first_error from None
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, Iterable):
        return data
    raise TypeError(
        f"InfluencePruner needs the training data as a DataLoader, a LightningDataModule or an "
        f"IndexedDataset; got {type(data).__name__}."
    )


class _SolverOptions(TypedDict):
    """The keyword arguments both solvers take from the pruner's settings."""

    method: str
    time_limit: float
    rank: int
    exact_max_n: int
    seed: int


def _check_one_target(prune_ratio: float | None, epsilon: float | None) -> None:
    if (prune_ratio is None) == (epsilon is None):
        raise ValueError(
            "give exactly one of prune_ratio= (prune that fraction, minimising ||W^T S||) or epsilon= "
            "(prune as many as possible with ||W^T S|| <= epsilon)."
        )


def _pruned_count(prune_ratio: Any, n: int) -> int:
    """``m = round(prune_ratio n)`` for a ratio strictly between 0 and 1."""
    if isinstance(prune_ratio, bool) or not isinstance(prune_ratio, (int, float)) or not 0 < prune_ratio < 1:
        raise ValueError(f"prune_ratio must lie strictly between 0 and 1, got {prune_ratio!r}.")
    return int(round(prune_ratio * n))


class InfluencePruner:
    """Prune the training samples whose joint removal changes the model least.

    Computes per-sample last-layer influence vectors ``S_i`` (predicted parameter change when sample
    ``i`` is left out; see :func:`~lightning_prune.influence.influence_vectors`), then solves one of
    the two problems of the paper with OR-Tools (see :mod:`lightning_prune.influence.solvers`):

    * ``prune_ratio=r``: prune ``m = round(r N)`` samples minimising ``||W^T S||_2``;
    * ``epsilon=e``: prune as many samples as possible with ``||W^T S||_2 <= e``.

    Args:
        damping: ``lambda`` added to the last-layer Hessian; use the weight decay the model was
            trained with (the softmax Hessian is singular without it).
        solver: ``"auto"`` (exact SCIP for ``n <= exact_max_n``, else relaxation + local search),
            ``"exact"``, ``"relaxation"`` or ``"greedy"``.
        time_limit: seconds for the selection solve.
        layer: name of the final ``nn.Linear`` (default: the model's last ``nn.Linear``).
        exact_max_dim: largest last-layer size ``d`` inverted exactly (beyond: conjugate gradients).
        rank: rank of the truncated SVD used by the relaxation.
        exact_max_n: largest ``n`` that ``solver="auto"`` solves exactly.
        batch_size: batch size when ``data`` is a dataset rather than a loader.
        seed: seed of the randomised parts of the solver.
        device: where the Hessian and solves are computed (default CPU).
        gather: how ranks exchange their shards under DDP (default: ``torch.distributed`` when
            initialised; or a Lightning strategy / callable with ``all_gather``'s contract).
        dtype: storage type of the influence matrix (float32 halves memory).

    After :meth:`select`, ``last_influence`` holds the :class:`InfluenceVectors` and
    ``last_solution`` the :class:`PruningSolution`.
    """

    def __init__(
        self,
        damping: float = 5e-4,
        *,
        solver: str = "auto",
        time_limit: float = 60.0,
        layer: str | None = None,
        exact_max_dim: int = 10_000,
        rank: int = 64,
        exact_max_n: int = 40,
        batch_size: int = 256,
        seed: int = 0,
        device: torch.device | str | None = None,
        gather: GatherSpec = "auto",
        dtype: np.dtype | type = np.float32,
    ) -> None:
        if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping > 0):
            raise ValueError(
                f"damping must be a positive number (got {damping!r}); use the weight decay the model was "
                "trained with, e.g. 5e-4."
            )
        if solver not in ("auto", "exact", "relaxation", "greedy"):
            raise ValueError(f"solver={solver!r}: choose 'auto', 'exact', 'relaxation' or 'greedy'.")
        if not (isinstance(time_limit, (int, float)) and time_limit > 0):
            raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}.")
        self.damping = float(damping)
        self.solver = solver
        self.time_limit = float(time_limit)
        self.layer = layer
        self.exact_max_dim = int(exact_max_dim)
        self.rank = int(rank)
        self.exact_max_n = int(exact_max_n)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = device
        self.gather = gather
        self.dtype = dtype
        self.last_influence: InfluenceVectors | None = None
        self.last_solution: PruningSolution | None = None

    @property
    def hparams(self) -> dict[str, Any]:
        return {
            "damping": self.damping,
            "solver": self.solver,
            "time_limit": self.time_limit,
            "layer": self.layer,
            "exact_max_dim": self.exact_max_dim,
            "rank": self.rank,
            "exact_max_n": self.exact_max_n,
            "seed": self.seed,
        }

    def influence(self, model: nn.Module, data: Any) -> InfluenceVectors:
        """Influence vectors ``S`` (``.S``, ``[N, d]``) and labels (``.labels``) of the training data."""
        loader = _training_loader(data, self.batch_size)
        vectors = influence_vectors(
            model,
            loader,
            damping=self.damping,
            layer=self.layer,
            exact_max_dim=self.exact_max_dim,
            dtype=self.dtype,
            device=self.device,
            gather=self.gather,
        )
        self.last_influence = vectors
        return vectors

    def solve(
        self, S: np.ndarray | InfluenceVectors, prune_ratio: float | None = None, epsilon: float | None = None
    ) -> PruningSolution:
        """Solve the selection problem for given influence vectors (exactly one of the two targets)."""
        matrix = S.S if isinstance(S, InfluenceVectors) else np.asarray(S)
        _check_one_target(prune_ratio, epsilon)
        if epsilon is not None:
            solution = solve_epsilon(matrix, epsilon, **self._solver_options())
        else:
            m = _pruned_count(prune_ratio, matrix.shape[0])
            solution = solve_cardinality(matrix, m, **self._solver_options())
        self.last_solution = solution
        return solution

    def _solver_options(self) -> _SolverOptions:
        return _SolverOptions(
            method=self.solver, time_limit=self.time_limit, rank=self.rank, exact_max_n=self.exact_max_n, seed=self.seed
        )

    def select_from(
        self, vectors: InfluenceVectors, prune_ratio: float | None = None, epsilon: float | None = None
    ) -> Selection:
        """A :class:`~lightning_prune.Selection` from influence vectors already computed (e.g. to try
        several ratios without running the model again)."""
        solution = self.solve(vectors, prune_ratio=prune_ratio, epsilon=epsilon)
        hparams = dict(self.hparams)
        hparams.update(
            problem=solution.problem,
            prune_ratio=prune_ratio,
            epsilon=solution.epsilon,
            m=solution.num_pruned,
            objective=solution.objective,
            bound=solution.bound,
            solver_method=solution.method,
            solver_status=solution.status,
            solver_time_s=round(solution.time_s, 3),
            influence_solver=vectors.solver,
            influence_layer=vectors.layer,
        )
        return Selection(
            indices=solution.kept(),
            num_samples=vectors.num_samples,
            method="influence",
            hparams=hparams,
            label_fingerprint=label_fingerprint(vectors.labels),
        )

    def select(
        self, model: nn.Module, data: Any, prune_ratio: float | None = None, epsilon: float | None = None
    ) -> Selection:
        """Compute the influence of every training sample and return the samples to keep.

        Args:
            model: the trained model (``LightningModule`` or ``nn.Module``).
            data: a ``LightningDataModule`` (its ``train_dataloader``), a ``DataLoader`` or an
                ``IndexedDataset`` yielding ``(x, y, index)``; preferably without augmentation.
            prune_ratio: fraction of samples to prune (cardinality-guaranteed problem), or
            epsilon: budget on ``||W^T S||_2`` (generalisation-guaranteed problem). Exactly one.
        """
        _check_one_target(prune_ratio, epsilon)  # before the model runs, which takes a while
        vectors = self.influence(model, data)
        return self.select_from(vectors, prune_ratio=prune_ratio, epsilon=epsilon)
