"""Benchmark the influence-pruning solvers at CIFAR-10 shape: n = 50,000 samples, d = 5,130
(a 512-wide penultimate layer + bias, 10 classes).

Where S comes from (``--source``):

* ``influence`` (default): through the real code path. Synthetic 512-d ReLU "penultimate features"
  (class means plus per-sample noise, 5% flipped labels so some samples are hard), a final
  ``nn.Linear(512, 10)`` trained to optimum on them with L-BFGS and L2 = damping, then
  :func:`lightning_prune.influence.influence_vectors` (forward hook, exact float64 Hessian,
  Cholesky) over a shuffled ``(x, y, index)`` loader. Most samples end up confidently classified
  (small ``S_i``), a minority hard, as for a trained network.
* ``lowrank``: ``S = (Z B + noise) * heavy-tailed row scale``, a rank-64 signal plus isotropic
  noise; seconds to generate, for quick solver timings.

Then, for the cardinality problem at ``--prune-ratio`` (default 0.4, m = 20,000): greedy; the
scalable path without greedy's warm start (truncated SVD + PDLP relaxation + rounding + local
search); the default scalable path (local search from the better of rounding and greedy); random
subsets; and the exact MathOpt/SCIP solver on an n = 40 sub-problem against greedy and the
scalable path there. Finally the epsilon problem with epsilon = the norm reached at that m (so about m samples or more
should fit).

Run: ``python benchmarks/influence_solver.py`` (about 4 minutes on 2 CPU cores, peak memory 2.7 GiB;
S alone is 1 GiB in float32). ``--cache S.npy`` keeps S between runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune.data.indexed import IndexedDataset
from lightning_prune.influence import (
    greedy_cardinality,
    greedy_epsilon,
    influence_vectors,
    solve_cardinality,
    solve_epsilon,
    subset_norm,
)


def influence_source(n: int, width: int, classes: int, damping: float, seed: int) -> tuple[np.ndarray, dict]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=generator)
    means = torch.randn(classes, width, generator=generator) * 0.45
    features = torch.relu(means[labels] + torch.randn(n, width, generator=generator))
    noisy = torch.rand(n, generator=generator) < 0.05
    labels = torch.where(noisy, torch.randint(0, classes, (n,), generator=generator), labels)

    head = nn.Linear(width, classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimiser = torch.optim.LBFGS(
        head.parameters(), lr=1, max_iter=300, tolerance_grad=1e-7, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        flat = torch.cat([head.weight, head.bias[:, None]], dim=1)
        loss = nn.functional.cross_entropy(head(features), labels) + 0.5 * damping * (flat**2).sum()
        loss.backward()
        return loss

    started = time.perf_counter()
    optimiser.step(closure)
    train_s = time.perf_counter() - started
    with torch.no_grad():
        probs = torch.softmax(head(features), dim=1)
        accuracy = float((probs.argmax(1) == labels).float().mean())
        confident = float((probs.max(1).values > 0.9).float().mean())
    loader = DataLoader(IndexedDataset(TensorDataset(features, labels)), batch_size=1024, shuffle=True)
    started = time.perf_counter()
    vectors = influence_vectors(head, loader, damping=damping, dtype=np.float32)
    info = {
        "train_s": train_s,
        "influence_s": time.perf_counter() - started,
        "train_accuracy": accuracy,
        "confident_fraction": confident,
        "hessian_s": vectors.info.get("hessian_s"),
    }
    return vectors.S, info


def lowrank_source(n: int, d: int, seed: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    S = np.empty((n, d), dtype=np.float32)
    basis = rng.standard_normal((64, d)).astype(np.float32) / 8.0
    for start in range(0, n, 5000):
        rows = min(5000, n - start)
        signal = rng.standard_normal((rows, 64)).astype(np.float32) @ basis
        noise = 0.3 * rng.standard_normal((rows, d)).astype(np.float32)
        scale = rng.lognormal(sigma=1.0, size=(rows, 1)).astype(np.float32) * 1e-5
        S[start : start + rows] = (signal + noise) * scale
    return S, {"generate_s": time.perf_counter() - started}


def row(name: str, solution, reference: float | None = None) -> str:
    bound = "-" if solution.bound is None else f"{solution.bound:.3e}"
    vs = "" if reference is None else f"{reference / solution.objective:8.1f}x"
    return (
        f"  {name:<34} {solution.objective:11.4e} {bound:>11} {solution.time_s:8.1f} s  "
        f"{solution.status:<10} {vs:>9}  {solution.method}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Benchmark influence-pruning solvers at CIFAR-10 shape.")
    parser.add_argument("--source", choices=["influence", "lowrank"], default="influence")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--damping", type=float, default=5e-4)
    parser.add_argument("--prune-ratio", type=float, default=0.4)
    parser.add_argument("--time-limit", type=float, default=90.0, help="seconds per scalable cardinality solve")
    parser.add_argument(
        "--epsilon-time-limit", type=float, default=150.0, help="seconds for the scalable epsilon solve"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="a .npy file to save S to, or load it from if it exists")
    args = parser.parse_args()
    torch.set_num_threads(2)
    total_started = time.perf_counter()
    d = args.classes * (args.width + 1)

    if args.cache and os.path.exists(args.cache):
        S = np.load(args.cache)
        print(f"S loaded from {args.cache}: {S.shape} {S.dtype}")
    elif args.source == "influence":
        S, info = influence_source(args.n, args.width, args.classes, args.damping, args.seed)
        print(
            f"S from the influence code path: {S.shape} {S.dtype} ({S.nbytes / 2**30:.2f} GiB); last layer trained "
            f"in {info['train_s']:.1f} s (train accuracy {info['train_accuracy']:.3f}, "
            f"{info['confident_fraction']:.0%} of samples with max p > 0.9); influence vectors in "
            f"{info['influence_s']:.1f} s (Hessian {info['hessian_s']:.1f} s)"
        )
    else:
        S, info = lowrank_source(args.n, d, args.seed)
        print(
            f"S from the rank-64 + noise model: {S.shape} {S.dtype} ({S.nbytes / 2**30:.2f} GiB) in {info['generate_s']:.1f} s"
        )
    if args.cache and not os.path.exists(args.cache):
        np.save(args.cache, S)
    n = S.shape[0]
    m = int(round(args.prune_ratio * n))
    rng = np.random.default_rng(args.seed + 1)

    started = time.perf_counter()
    random_norms = [subset_norm(S, rng.choice(n, m, replace=False)) for _ in range(5)]
    random_norm = float(np.mean(random_norms))
    print(f"\ncardinality problem, m = {m} of n = {n} (prune ratio {args.prune_ratio}):")
    print(f"  {'random subsets (mean of 5)':<34} {random_norm:11.4e} {'-':>11} {time.perf_counter() - started:8.1f} s")
    print(f"  {'method':<34} {'||W^T S||':>11} {'bound':>11} {'time':>10}  {'status':<10} {'random/x':>9}  path")
    greedy = greedy_cardinality(S, m)
    print(row("greedy", greedy, random_norm), flush=True)
    alone = solve_cardinality(S, m, method="relaxation", time_limit=args.time_limit, warm_start_greedy=False)
    print(row("svd+pdlp+rounding+local search", alone, random_norm), flush=True)
    details = alone.details
    print(
        f"    stages: svd {details['svd_s']:.1f} s, pdlp {details['pdlp_s']:.1f} s ({details['pdlp_iterations']} iterations, "
        f"{details['pdlp_termination']}), bound solve {details.get('bound_s', 0):.1f} s, rounded objective "
        f"{details['rounded_objective']:.4e}, local search {details['local_search_s']:.1f} s ({details['swaps']} swaps)"
    )
    full = solve_cardinality(S, m, method="relaxation", time_limit=args.time_limit)
    print(row("default scalable path (auto)", full, random_norm), flush=True)
    print(
        f"    start: {full.details['start']}, local search {full.details['local_search_s']:.1f} s "
        f"({full.details['swaps']} swaps)"
    )

    sub = np.sort(rng.choice(n, 40, replace=False))
    S_sub = np.asarray(S[sub], dtype=np.float64)
    m_sub = 16
    print(f"\nsub-problem: n = 40 random rows, m = {m_sub}:")
    sub_random = float(np.mean([subset_norm(S_sub, rng.choice(40, m_sub, replace=False)) for _ in range(100)]))
    print(f"  {'random subsets (mean of 100)':<34} {sub_random:11.4e}")
    sub_exact = solve_cardinality(S_sub, m_sub, method="exact", time_limit=120)
    print(row("exact (MathOpt + SCIP)", sub_exact, sub_random))
    print(
        f"    SCIP: {sub_exact.details['termination']}, {sub_exact.details['nodes']} nodes, rank {sub_exact.details['rank']}"
    )
    print(row("greedy", greedy_cardinality(S_sub, m_sub), sub_random))
    print(
        row(
            "svd+pdlp+rounding+local search",
            solve_cardinality(S_sub, m_sub, method="relaxation", rank=16, time_limit=30),
            sub_random,
        )
    )

    epsilon = full.objective
    print(f"\nepsilon problem, epsilon = the norm the default path reached at m = {m}: {epsilon:.4e}")
    print(f"  {'method':<34} {'pruned':>11} {'||W^T S||':>11} {'time':>10}  path")
    greedy_eps = greedy_epsilon(S, epsilon)
    print(
        f"  {'greedy':<34} {greedy_eps.num_pruned:11d} {greedy_eps.objective:11.4e} {greedy_eps.time_s:8.1f} s  {greedy_eps.method}"
    )
    eps_solution = solve_epsilon(S, epsilon, method="relaxation", time_limit=args.epsilon_time_limit, max_relaxations=6)
    print(
        f"  {'default scalable path (auto)':<34} {eps_solution.num_pruned:11d} {eps_solution.objective:11.4e} "
        f"{eps_solution.time_s:8.1f} s  {eps_solution.method}"
    )
    details = eps_solution.details
    print(
        f"    stages: {details.get('pdlp_solves', 0)} pdlp solves {details.get('pdlp_s', 0):.1f} s (relaxed count "
        f"{details.get('relaxed_count')}), rounding {details['rounded_pruned']}, greedy {details.get('greedy_pruned')}, "
        f"local search {details['local_search_s']:.1f} s: {details['local_added']} added, {details['local_swaps']} "
        f"swaps, {details['local_grown']} grown in {details['local_probes']} probes"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"\ntotal wall time {time.perf_counter() - total_started:.1f} s, peak memory {peak:.1f} GiB")


if __name__ == "__main__":
    main()
