"""The exact solve: both problems as a mixed-integer QP, through MathOpt with SCIP (GSCIP).

Only this path proves anything (optimality, and the bound of :class:`PruningSolution`); it is the
reference the heuristics are tested against, and ``"auto"`` uses it where it closes (tens of
samples).
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_prune.influence.solvers.common import _Target

if TYPE_CHECKING:
    from ortools.math_opt.python import mathopt


def _exact_solve(
    S: np.ndarray, target: _Target, *, time_limit: float, hint: np.ndarray | None, verbose: bool
) -> tuple[np.ndarray | None, float | None, str, dict[str, Any]]:
    """Solve one problem with SCIP through MathOpt. Returns (mask or None, bound, status, details);
    the bound is in original units (norm for cardinality, count for epsilon). SCIP's log is printed
    only with ``verbose``."""
    from ortools.math_opt.python import mathopt

    A, s0 = _factor(np.asarray(S, dtype=np.float64))
    model, w, z = _build_model(A, s0, target)
    model_params = None
    if hint is not None:
        values = {w[i]: float(hint[i]) for i in range(len(w))}
        zh = A.T @ hint.astype(np.float64)
        values.update({z[j]: float(zh[j]) for j in range(len(z))})
        model_params = mathopt.ModelSolveParameters(solution_hints=[mathopt.SolutionHint(variable_values=values)])
    result = mathopt.solve(
        model, mathopt.SolverType.GSCIP, params=_scip_params(time_limit, verbose), model_params=model_params
    )
    return _read_result(result, w, A.shape[1], s0, target)


def _factor(S64: np.ndarray) -> tuple[np.ndarray, float]:
    """``A`` with ``A A^T = S S^T`` and at most ``min(n, d)`` columns (``U Sigma`` of a thin SVD when
    ``d > n``: fewer ``z`` variables for SCIP), divided by the RMS row norm ``s0`` so the
    model's coefficients are O(1); returns ``(A / s0, s0)``."""
    n, d = S64.shape
    if d > n:
        U, sigma, _ = np.linalg.svd(S64, full_matrices=False)
        keep = sigma > sigma[0] * 1e-12 if sigma.size and sigma[0] > 0 else np.zeros(sigma.size, dtype=bool)
        A = U[:, keep] * sigma[keep]
    else:
        A = S64
    s0 = math.sqrt(float(np.mean(np.einsum("ij,ij->i", S64, S64)))) or 1.0
    return A / s0, s0


def _build_model(A: np.ndarray, s0: float, target: _Target) -> tuple[mathopt.Model, list[Any], list[Any]]:
    """Binary ``w``, continuous ``z = A^T w``; minimise ``||z||^2`` subject to ``sum w = m``, or
    maximise ``sum w`` subject to ``||z||^2 <= (epsilon / s0)^2``. Returns (model, w, z)."""
    from ortools.math_opt.python import mathopt

    n, k = A.shape
    model = mathopt.Model(name="influence-pruning")
    w = [model.add_binary_variable(name=f"w{i}") for i in range(n)]
    z = [model.add_variable(lb=-math.inf, ub=math.inf, name=f"z{j}") for j in range(k)]
    for j in range(k):
        model.add_linear_constraint(
            mathopt.fast_sum(float(A[i, j]) * w[i] for i in range(n) if A[i, j] != 0.0) - z[j] == 0.0
        )
    norm_sq = mathopt.fast_sum(zj * zj for zj in z) if z else 0.0
    if target.m is not None:
        model.add_linear_constraint(mathopt.fast_sum(w) == float(target.m))
        model.minimize(norm_sq)
        return model, w, z
    epsilon = target.epsilon
    if z and epsilon is not None:
        model.add_quadratic_constraint(expr=norm_sq, ub=(epsilon / s0) ** 2)
    model.maximize(mathopt.fast_sum(w))
    return model, w, z


def _scip_params(time_limit: float, verbose: bool) -> mathopt.SolveParameters:
    from ortools.math_opt.python import mathopt

    try:
        from ortools.math_opt.solvers.gscip import gscip_pb2
    except ImportError:  # OR-Tools before 9.15 ships SCIP's parameters at the package's top level
        from ortools.gscip import gscip_pb2  # type: ignore[import-not-found,no-redef,unused-ignore]

    return mathopt.SolveParameters(
        time_limit=_dt.timedelta(seconds=time_limit),
        relative_gap_tolerance=0.0,
        absolute_gap_tolerance=0.0,
        # SCIP's banner, presolve statistics and node log; off unless asked for.
        enable_output=verbose,
        threads=1,
        gscip=gscip_pb2.GScipParameters(real_params={"numerics/feastol": 1e-9}),
    )


def _read_result(
    result: mathopt.SolveResult, w: list[Any], rank: int, s0: float, target: _Target
) -> tuple[np.ndarray | None, float | None, str, dict[str, Any]]:
    from ortools.math_opt.python import mathopt

    reason = result.termination.reason
    details = {
        "termination": reason.name.lower(),
        "nodes": int(result.solve_stats.node_count),
        "scip_time_s": result.solve_stats.solve_time.total_seconds(),
        "rank": rank,
    }
    status = "optimal" if reason == mathopt.TerminationReason.OPTIMAL else "feasible"
    bound = None
    try:
        raw = float(result.termination.objective_bounds.dual_bound)
    except (AttributeError, TypeError, ValueError):
        raw = float("nan")
    if math.isfinite(raw):
        bound = math.sqrt(max(raw, 0.0)) * s0 if target.m is not None else float(math.floor(raw + 1e-6))
    if not result.has_primal_feasible_solution():
        return None, bound, "no_solution", details
    values = result.variable_values(w)
    mask = np.array([v > 0.5 for v in values], dtype=bool)
    return mask, bound, status, details
