"""Influence-based pruning: influence vectors against autograd, the solvers against brute force."""

from __future__ import annotations

import lightning.pytorch as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune.data.indexed import IndexedDataset
from lightning_prune.influence import (
    InfluencePruner,
    greedy_cardinality,
    greedy_epsilon,
    hessian_vector_product,
    influence_vectors,
    last_layer_hessian,
    solve_cardinality,
    solve_epsilon,
    subset_norm,
)
from lightning_prune.influence.vectors import collect_last_layer_inputs
from lightning_prune.selection.files import label_fingerprint
from lightning_prune.selection.selection import Selection

# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


def _tiny_problem(n: int = 48, d_in: int = 5, hidden: int = 4, classes: int = 3, bias: bool = True, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d_in, generator=generator, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes, bias=bias)).double()
    dataset = IndexedDataset(TensorDataset(X, y))
    return model, dataset, X, y


def _autograd_influence(model: nn.Sequential, X: torch.Tensor, y: torch.Tensor, damping: float) -> np.ndarray:
    """S_i = (1/n) H^{-1} g_i, with g_i and H from torch.autograd on the last layer's parameters."""
    last = model[2]
    with torch.no_grad():
        h = model[1](model[0](X))
    C, H = last.weight.shape
    has_bias = last.bias is not None
    parts = [last.weight.detach()] + ([last.bias.detach()[:, None]] if has_bias else [])
    theta = torch.cat(parts, dim=1).reshape(-1).clone()
    width = H + int(has_bias)

    def logits_of(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        W = t.reshape(C, width)
        out = rows @ W[:, :H].T
        return out + W[:, H] if has_bias else out

    def sample_loss(t: torch.Tensor, i: int) -> torch.Tensor:
        return nn.functional.cross_entropy(logits_of(t, h[i : i + 1]), y[i : i + 1])

    def objective(t: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits_of(t, h), y) + damping / 2 * (t**2).sum()

    grads = []
    for i in range(len(y)):
        t = theta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sample_loss(t, i), t)
        grads.append(g)
    G = torch.stack(grads)
    hessian = torch.autograd.functional.hessian(objective, theta)
    return (torch.linalg.solve(hessian, G.T).T / len(y)).numpy()


def _brute_force(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = S.shape[0]
    bits = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
    return bits.sum(1), np.linalg.norm(bits @ S, axis=1)


def _random_S(rng: np.random.Generator, n: int, d: int, rank: int | None = None) -> np.ndarray:
    """Rows with heavy-tailed norms and (optionally) low-rank structure plus noise, like real S."""
    if rank is None:
        base = rng.normal(size=(n, d))
    else:
        base = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d)) / np.sqrt(rank) + 0.3 * rng.normal(size=(n, d))
    return base * rng.lognormal(sigma=0.8, size=(n, 1)) * 1e-3


# ----------------------------------------------------------------------------------------------
# Influence vectors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_influence_vectors_match_autograd(bias: bool) -> None:
    model, dataset, X, y = _tiny_problem(bias=bias)
    loader = DataLoader(dataset, batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(3))
    damping = 0.05
    vectors = influence_vectors(model, loader, damping=damping, dtype=np.float64)
    expected = _autograd_influence(model, X, y, damping)
    assert vectors.solver == "cholesky"
    assert vectors.S.shape == expected.shape == (len(y), 3 * (4 + int(bias)))
    np.testing.assert_allclose(vectors.S, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_array_equal(vectors.labels, y.numpy())
    assert model.training  # training mode is restored


def test_conjugate_gradient_path_matches_exact() -> None:
    model, dataset, X, y = _tiny_problem(n=40, hidden=6, classes=4, seed=1)
    loader = DataLoader(dataset, batch_size=16)
    exact = influence_vectors(model, loader, damping=0.02, dtype=np.float64)
    cg = influence_vectors(model, loader, damping=0.02, dtype=np.float64, exact_max_dim=0, cg_tol=1e-12)
    assert cg.solver == "cg" and exact.solver == "cholesky"
    np.testing.assert_allclose(cg.S, exact.S, rtol=1e-7, atol=1e-10 * np.abs(exact.S).max())


def test_hessian_vector_product_matches_formed_hessian() -> None:
    model, dataset, _, _ = _tiny_problem(n=30, seed=2)
    inputs = collect_last_layer_inputs(model, DataLoader(dataset, batch_size=8))
    H = last_layer_hessian(inputs.features, inputs.probs, 0.1, chunk_size=7)
    assert torch.allclose(H, H.T)
    V = torch.randn(3, H.shape[0], dtype=torch.float64)
    HV = hessian_vector_product(inputs.features, inputs.probs, V, 0.1, chunk_size=11)
    torch.testing.assert_close(HV, V @ H, rtol=1e-10, atol=1e-12)


def test_named_layer_and_missing_samples_and_bad_damping() -> None:
    model, dataset, _, y = _tiny_problem(n=20)
    loader = DataLoader(dataset, batch_size=6)
    named = influence_vectors(model, loader, damping=0.1, layer="2", dtype=np.float64)
    default = influence_vectors(model, loader, damping=0.1, dtype=np.float64)
    np.testing.assert_array_equal(named.S, default.S)
    assert named.layer == "2"
    with pytest.raises(TypeError, match="not an nn.Linear"):
        influence_vectors(model, loader, damping=0.1, layer="1")
    with pytest.raises(ValueError, match="names no submodule"):
        influence_vectors(model, loader, damping=0.1, layer="head")
    with pytest.raises(ValueError, match=r"visited 18 of 20 samples.*drop_last"):
        influence_vectors(model, DataLoader(dataset, batch_size=6, drop_last=True), damping=0.1)
    with pytest.raises(ValueError, match="damping must be a positive"):
        influence_vectors(model, loader, damping=0.0)
    no_index = DataLoader(TensorDataset(torch.randn(4, 5, dtype=torch.float64), y[:4]), batch_size=2)
    with pytest.raises(ValueError, match="IndexedDataset"):
        influence_vectors(model, no_index, damping=0.1)


# ----------------------------------------------------------------------------------------------
# Solvers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_cardinality_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 12 + 2 * seed  # 12, 14, 16
    S = _random_S(rng, n, 25, rank=4 if seed == 2 else None)
    counts, norms = _brute_force(S)
    for m in (1, n // 3, n // 2 + 1):
        solution = solve_cardinality(S, m, method="exact", time_limit=60)
        best = norms[counts == m].min()
        assert solution.num_pruned == m
        assert solution.status == "optimal"
        assert solution.objective == pytest.approx(best, rel=1e-7, abs=1e-15)
        assert solution.objective == pytest.approx(subset_norm(S, solution.pruned), rel=1e-12)
        assert solution.bound is not None and solution.bound <= solution.objective * (1 + 1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_epsilon_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(10 + seed)
    n = 13 + 3 * seed  # 13, 16
    S = _random_S(rng, n, 20)
    counts, norms = _brute_force(S)
    achievable = np.unique(norms)
    for q in (0.02, 0.2, 0.5):
        # an epsilon half-way between two achievable norms, so the answer is not a tolerance question
        position = int(q * (achievable.size - 1))
        epsilon = 0.5 * (achievable[position] + achievable[position + 1])
        solution = solve_epsilon(S, epsilon, method="exact", time_limit=60)
        assert solution.status == "optimal"
        assert solution.num_pruned == counts[norms <= epsilon].max()
        assert solution.objective <= epsilon
        assert solution.bound == solution.num_pruned


def test_auto_uses_exact_for_small_n() -> None:
    S = _random_S(np.random.default_rng(5), 14, 10)
    solution = solve_cardinality(S, 5)
    assert solution.method == "exact(gscip)" and solution.status == "optimal"
    counts, norms = _brute_force(S)
    assert solution.objective == pytest.approx(norms[counts == 5].min(), rel=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scalable_path_never_worse_than_greedy(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n, d = (400, 60) if seed < 2 else (900, 120)
    S = _random_S(rng, n, d, rank=8).astype(np.float32 if seed == 2 else np.float64)
    m = int(0.4 * n)
    greedy = greedy_cardinality(S, m)
    scalable = solve_cardinality(S, m, method="relaxation", rank=16, time_limit=20)
    assert scalable.num_pruned == m
    assert scalable.method.startswith("svd(k=16)+pdlp")
    assert scalable.objective <= greedy.objective * (1 + 1e-9)
    random_norm = np.median([subset_norm(S, rng.choice(n, m, replace=False)) for _ in range(5)])
    assert scalable.objective < random_norm / 10
    # without greedy's warm start, relaxation + rounding + local search alone still beats random
    alone = solve_cardinality(S, m, method="relaxation", rank=16, time_limit=20, warm_start_greedy=False)
    assert "greedy" not in alone.method and alone.objective < random_norm / 5

    epsilon = 0.5 * greedy.objective
    greedy_eps = greedy_epsilon(S, epsilon)
    scalable_eps = solve_epsilon(S, epsilon, method="relaxation", rank=16, time_limit=20, max_relaxations=4)
    assert scalable_eps.num_pruned >= greedy_eps.num_pruned > 0
    assert scalable_eps.objective <= epsilon


def test_sketch_screened_greedy_equals_textbook_greedy_with_an_exact_sketch() -> None:
    from lightning_prune.influence import solvers

    rng = np.random.default_rng(11)
    S = _random_S(rng, 300, 20, rank=5)
    sq = solvers._row_sq_norms(S)
    sketch = solvers._make_sketch(S, sq, rank=20, seed=0)  # rank = d: the sketch is exact
    for m, limit in ((120, None), (None, (0.5 * greedy_cardinality(S, 120).objective) ** 2)):
        textbook, _ = solvers._greedy(S, sq, m=m, limit_sq=limit, deadline=float("inf"), sketch=None)
        screened, _ = solvers._greedy(S, sq, m=m, limit_sq=limit, deadline=float("inf"), sketch=sketch)
        np.testing.assert_array_equal(screened, textbook)


def test_default_verbosity_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    # capfd captures file descriptors 1 and 2, so it also sees what the native OR-Tools libraries
    # (SCIP, PDLP, absl logging) write around Python's sys.stdout / sys.stderr.
    rng = np.random.default_rng(21)
    small = _random_S(rng, 14, 10)
    exact = solve_cardinality(small, 5)
    exact_eps = solve_epsilon(small, 0.5 * exact.objective + 1e-12)
    assert exact.method == exact_eps.method == "exact(gscip)"
    large = _random_S(rng, 200, 30, rank=6)
    relaxed = solve_cardinality(large, 80, method="relaxation", rank=8, time_limit=10)
    relaxed_eps = solve_epsilon(large, relaxed.objective, method="relaxation", rank=8, time_limit=10, max_relaxations=2)
    assert relaxed.method.startswith("svd(k=8)+pdlp") and relaxed_eps.method.startswith("svd(k=8)+pdlp")
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""


def test_verbose_shows_the_exact_solver_log(capfd: pytest.CaptureFixture[str]) -> None:
    S = _random_S(np.random.default_rng(22), 12, 8)
    solve_cardinality(S, 4, method="exact", verbose=True)
    captured = capfd.readouterr()
    assert "SCIP" in captured.out + captured.err


def test_epsilon_too_small_prunes_nothing_with_a_warning() -> None:
    S = _random_S(np.random.default_rng(7), 30, 12)
    tiny = 1e-6 * np.linalg.norm(S, axis=1).min()
    for method in ("exact", "relaxation", "greedy"):
        with pytest.warns(UserWarning, match="too small to prune anything"):
            solution = solve_epsilon(S, tiny, method=method, rank=8, time_limit=10, max_relaxations=2)
        assert solution.num_pruned == 0 and solution.objective == 0.0
        assert solution.kept().size == 30


def test_bad_inputs_fail_clearly() -> None:
    S = _random_S(np.random.default_rng(8), 10, 4)
    with pytest.raises(ValueError, match="epsilon=-0.1.*>= 0"):
        solve_epsilon(S, -0.1)
    with pytest.raises(ValueError, match="epsilon=nan"):
        solve_epsilon(S, float("nan"))
    with pytest.raises(ValueError, match="m=11 samples to prune, but there are n=10"):
        solve_cardinality(S, 11)
    with pytest.raises(TypeError, match="must be an integer"):
        solve_cardinality(S, 2.5)
    broken = S.copy()
    broken[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite entries \(first in rows \[3\]\)"):
        solve_cardinality(broken, 3)
    broken[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        solve_epsilon(broken, 1.0)
    with pytest.raises(ValueError, match="non-empty 2-D"):
        solve_cardinality(S[0], 1)
    with pytest.raises(ValueError, match="method='fast'"):
        solve_cardinality(S, 2, method="fast")
    with pytest.raises(ValueError, match="time_limit"):
        solve_cardinality(S, 2, time_limit=0)


# ----------------------------------------------------------------------------------------------
# InfluencePruner end to end
# ----------------------------------------------------------------------------------------------


def _trained_classifier(n: int = 90, seed: int = 0) -> tuple[nn.Module, IndexedDataset]:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 6, generator=generator) * 2.0
    y = torch.arange(n) % 3
    X = centers[y] + torch.randn(n, 6, generator=generator)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(150):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        optimiser.step()
    return model, IndexedDataset(TensorDataset(X, y))


def test_influence_pruner_select_end_to_end(tmp_path) -> None:
    model, dataset = _trained_classifier()
    loader = DataLoader(dataset, batch_size=32, shuffle=True)
    pruner = InfluencePruner(damping=1e-3, time_limit=10)
    selection = pruner.select(model, loader, prune_ratio=0.4)
    assert isinstance(selection, Selection)
    assert len(selection) == 90 - 36 and selection.num_samples == 90
    assert selection.method == "influence"
    assert selection.label_fingerprint == label_fingerprint(dataset.targets)
    solution = pruner.last_solution
    assert solution is not None and solution.num_pruned == 36
    np.testing.assert_array_equal(np.sort(np.concatenate([solution.pruned, selection.indices])), np.arange(90))
    for key in ("objective", "bound", "solver_method", "solver_time_s", "m", "damping"):
        assert key in selection.hparams
    assert selection.hparams["objective"] == pytest.approx(subset_norm(pruner.last_influence.S, solution.pruned))
    loaded = Selection.load(selection.save(tmp_path / "influence.npz"))
    np.testing.assert_array_equal(loaded.indices, selection.indices)
    assert loaded.hparams["m"] == 36 and loaded.hparams["problem"] == "cardinality"

    vectors = pruner.influence(model, dataset)  # a dataset works too; same rows whatever the order
    np.testing.assert_allclose(vectors.S, pruner.last_influence.S)
    epsilon = 0.5 * solution.objective
    by_budget = pruner.select_from(vectors, epsilon=epsilon)
    assert by_budget.hparams["objective"] <= epsilon and by_budget.hparams["problem"] == "epsilon"
    assert 0 < by_budget.num_samples - len(by_budget) < 90

    class DataModule(L.LightningDataModule):
        def setup(self, stage: str) -> None:
            self.train_set = dataset

        def train_dataloader(self) -> DataLoader:
            return DataLoader(self.train_set, batch_size=16, shuffle=True)

    from_datamodule = pruner.select(model, DataModule(), prune_ratio=0.4)
    assert len(from_datamodule) == 54 and from_datamodule.label_fingerprint == selection.label_fingerprint

    with pytest.raises(ValueError, match="exactly one of prune_ratio"):
        pruner.select(model, loader)
    with pytest.raises(ValueError, match="exactly one of prune_ratio"):
        pruner.select(model, loader, prune_ratio=0.3, epsilon=1.0)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        pruner.select_from(vectors, prune_ratio=1.2)
    with pytest.raises(ValueError, match="damping must be a positive"):
        InfluencePruner(damping=-1)
