"""Check the influence approximation and the pruning objective on a convex problem.

Model: multinomial logistic regression on scikit-learn's digits (raw pixels scaled to [0, 1], so
the penultimate features ``h`` are the pixels and the final ``nn.Linear`` is the whole model),
trained to its optimum with L-BFGS on ``mean cross-entropy + (lambda/2) ||theta||^2`` with
``lambda`` = the damping. Then:

1. **Parameter change.** For random sets ``P`` of several sizes, the predicted change
   ``sum_{i in P} S_i`` (``S`` from :func:`lightning_prune.influence.influence_vectors`; sign
   convention: ``S_i ~= theta_without_i - theta``) against the change measured by retraining on
   ``(1/n) sum_{i not in P} loss_i + (lambda/2)||theta||^2`` (the objective the influence function
   linearises: the 1/n normalisation is kept).
2. **Test-loss change.** ``grad L_test(theta) . sum_{i in P} S_i`` against the measured change.
3. **Selection.** ``||W^T S||`` of the solver's subset vs random subsets and greedy at several
   pruning ratios, and the measured effect of retraining without each.

Run: ``python examples/influence_theory_check.py --damping 1e-2 1e-3 1e-4`` (about 40 s on 2 CPU cores;
the default is one run at damping 1e-3).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune.data.indexed import IndexedDataset
from lightning_prune.influence import (
    greedy_cardinality,
    influence_vectors,
    solve_cardinality,
    solve_epsilon,
    subset_norm,
)


def _flat(model: nn.Linear) -> torch.Tensor:
    """Parameters in the influence code's order: row c is [W[c, :], b[c]]."""
    return torch.cat([model.weight, model.bias[:, None]], dim=1).reshape(-1)


def _objective(
    model: nn.Linear, X: torch.Tensor, y: torch.Tensor, keep: torch.Tensor, n: int, damping: float
) -> torch.Tensor:
    losses = nn.functional.cross_entropy(model(X), y, reduction="none")
    return (losses * keep).sum() / n + 0.5 * damping * (_flat(model) ** 2).sum()


def fit(
    X: torch.Tensor, y: torch.Tensor, damping: float, keep: torch.Tensor | None = None, start: nn.Linear | None = None
) -> nn.Linear:
    """Minimise the (weighted) regularised objective to high precision with L-BFGS."""
    n = X.shape[0]
    keep = torch.ones(n, dtype=X.dtype) if keep is None else keep
    model = nn.Linear(X.shape[1], int(y.max()) + 1).double()
    if start is not None:
        model.load_state_dict(start.state_dict())
    else:
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
    optimiser = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=5000,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        value = _objective(model, X, y, keep, n, damping)
        value.backward()
        return value

    for _ in range(5):
        optimiser.step(closure)
    return model


def test_loss(model: nn.Linear, X: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(X), y))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--damping", type=float, nargs="+", default=[1e-3], help="one run per value")
    parser.add_argument("--sets-per-size", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for damping in args.damping:
        check(damping, args.sets_per_size, args.seed)
        print()


def check(damping: float, sets_per_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)

    digits = load_digits()
    X_all = torch.tensor(digits.data / 16.0, dtype=torch.float64)
    y_all = torch.tensor(digits.target, dtype=torch.int64)
    order = rng.permutation(len(y_all))
    train, test = order[:1200], order[1200:]
    X, y, X_test, y_test = X_all[train], y_all[train], X_all[test], y_all[test]
    n = len(y)

    started = time.perf_counter()
    model = fit(X, y, damping)
    with torch.no_grad():
        accuracy = float((model(X_test).argmax(1) == y_test).double().mean())
    grad_norm = torch.autograd.grad(
        _objective(model, X, y, torch.ones(n, dtype=X.dtype), n, damping), list(model.parameters())
    )
    grad_norm = float(torch.sqrt(sum((g**2).sum() for g in grad_norm)))
    print(f"digits: n_train={n}, n_test={len(y_test)}, d={10 * 65} last-layer parameters, damping={damping}")
    print(
        f"trained to optimum: gradient norm {grad_norm:.1e}, test accuracy {accuracy:.3f}, test loss {test_loss(model, X_test, y_test):.4f}"
    )

    loader = DataLoader(IndexedDataset(TensorDataset(X, y)), batch_size=128, shuffle=True)
    vectors = influence_vectors(model, loader, damping=damping, dtype=np.float64)
    S = vectors.S
    theta = _flat(model).detach().numpy().copy()
    model.zero_grad()
    nn.functional.cross_entropy(model(X_test), y_test).backward()
    test_grad = torch.cat([model.weight.grad, model.bias.grad[:, None]], dim=1).reshape(-1).numpy()
    print(f"influence vectors: S {S.shape}, solver {vectors.solver}, {time.perf_counter() - started:.1f} s so far")

    # 1 + 2: predicted vs measured parameter and test-loss changes for random removals
    base_loss = test_loss(model, X_test, y_test)
    predicted, measured, pred_loss, meas_loss, per_set_r, sizes = [], [], [], [], [], []
    for fraction in (0.01, 0.05, 0.1, 0.2, 0.4):
        size = max(1, int(round(fraction * n)))
        for _ in range(sets_per_size):
            P = rng.choice(n, size, replace=False)
            keep = torch.ones(n, dtype=torch.float64)
            keep[P] = 0
            retrained = fit(X, y, damping, keep=keep, start=model)
            delta_measured = _flat(retrained).detach().numpy() - theta
            delta_predicted = S[P].sum(0)
            predicted.append(delta_predicted)
            measured.append(delta_measured)
            per_set_r.append(pearson(delta_predicted, delta_measured))
            pred_loss.append(float(test_grad @ delta_predicted))
            meas_loss.append(test_loss(retrained, X_test, y_test) - base_loss)
            sizes.append(size)
    predicted, measured = np.array(predicted), np.array(measured)
    rel_error = np.linalg.norm(predicted - measured, axis=1) / np.linalg.norm(measured, axis=1)
    print(f"\nrandom removals: {len(sizes)} sets of sizes {sorted(set(sizes))}")
    print(f"  parameter change, Pearson over all (set, coordinate) pairs: {pearson(predicted, measured):.4f}")
    print(f"  parameter change, per-set Pearson: median {np.median(per_set_r):.4f}, min {np.min(per_set_r):.4f}")
    print(
        f"  ||predicted|| vs ||measured|| across sets, Pearson: {pearson(np.linalg.norm(predicted, axis=1), np.linalg.norm(measured, axis=1)):.4f}"
    )
    for size in sorted(set(sizes)):
        chosen = np.array(sizes) == size
        print(
            f"    |P|={size:4d}: median relative error ||pred - meas|| / ||meas|| = {np.median(rel_error[chosen]):.3f}"
        )
    print(f"  test-loss change, Pearson (predicted grad.dtheta vs measured): {pearson(pred_loss, meas_loss):.4f}")

    # 3: the pruning objective of selected vs random vs greedy subsets, and their measured effect
    print("\nselection (cardinality problem), ||W^T S||; 'random' is the mean of 20 random subsets:")
    print(
        f"  {'ratio':>5} {'solver':>10} {'greedy':>10} {'random':>10} {'random/solver':>13} {'solver path':<48} "
        f"{'meas. dL_test solver':>20} {'random':>10}"
    )
    for ratio in (0.1, 0.2, 0.3, 0.4, 0.5):
        m = int(round(ratio * n))
        solution = solve_cardinality(S, m, time_limit=30)
        greedy = greedy_cardinality(S, m)
        random_sets = [rng.choice(n, m, replace=False) for _ in range(20)]
        random_norm = float(np.mean([subset_norm(S, P) for P in random_sets]))
        effects = []
        for P in (solution.pruned, random_sets[0]):
            keep = torch.ones(n, dtype=torch.float64)
            keep[torch.as_tensor(P)] = 0
            effects.append(test_loss(fit(X, y, damping, keep=keep, start=model), X_test, y_test) - base_loss)
        print(
            f"  {ratio:5.1f} {solution.objective:10.3e} {greedy.objective:10.3e} {random_norm:10.3e} "
            f"{random_norm / solution.objective:13.1f} {solution.method:<48} {effects[0]:+20.5f} {effects[1]:+10.5f}"
        )

    epsilon = float(np.mean([subset_norm(S, rng.choice(n, int(0.1 * n), replace=False)) for _ in range(20)]))
    budget = solve_epsilon(S, epsilon, time_limit=30)
    print(
        f"\nepsilon problem: with epsilon = the mean ||W^T S|| of random 10% subsets ({epsilon:.3e}), the solver "
        f"prunes {budget.num_pruned} of {n} ({budget.num_pruned / n:.0%}) at ||W^T S|| = {budget.objective:.3e} "
        f"[{budget.method}]"
    )
    print(f"total time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
