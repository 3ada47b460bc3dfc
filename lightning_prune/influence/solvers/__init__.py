"""Choosing the samples to prune from influence vectors ``S`` (``[n, d]``), with OR-Tools.

``W`` is the 0/1 pruning indicator (``W_i = 1``: sample ``i`` is pruned) and ``z = S^T W`` the
predicted change of the last-layer parameters when the pruned samples are left out. Two problems
(Yang et al., ICLR 2023, Eq. 3 and 4):

* **cardinality-guaranteed** (:func:`solve_cardinality`): minimise ``||S^T W||_2`` subject to
  ``sum W = m``;
* **generalisation-guaranteed** (:func:`solve_epsilon`): maximise ``sum W`` subject to
  ``||S^T W||_2 <= epsilon``.

Methods:

* ``"exact"``: MathOpt with SCIP (GSCIP), binary ``W`` and continuous ``z = A^T W`` where
  ``A A^T = S S^T`` (``A = S``, or ``U Sigma`` of a thin SVD when ``d > n``), quadratic objective
  (cardinality) or quadratic constraint (epsilon). Proves optimality for small ``n`` (tens).
* ``"relaxation"``: the scalable path. A rank-``k`` randomised SVD ``S ~= U_k Sigma_k V_k^T``
  (the "sketch" ``B = U_k Sigma_k``, ``B_i . B_j ~= S_i . S_j``), rescaled so rows have RMS norm 1;
  a convex relaxation (``0 <= W <= 1``) solved with PDLP: minimise ``||B^T W||^2 + sum_i rho_i W_i``
  subject to ``sum W = m``, where ``rho_i`` is row ``i``'s truncation residual (on 0/1 vectors this
  is ``||S^T W||^2`` up to the residuals' cross terms), a QP with a diagonal objective matrix in
  ``(W, z = B^T W)``; rounding (top-``m`` and randomised); local search on the full ``S``. Local
  search keeps ``z = S^T W`` and ``a = S z`` up to date incrementally and makes swap moves (one
  pruned sample for one kept one) that lower ``||z||``: candidates are screened by their individual
  effect and by scoring every (pruned, kept) pair through the sketch, and a sequence of swaps
  inside a candidate set is exact and cheap through its Gram matrix. The epsilon problem bisects on
  ``m`` with the same relaxation, rounds by ordered insertion, then uses add, swap and growth moves.
  Greedy's answer is a second starting point, so the result is never worse than greedy's (when
  both finish within the time limit). The bound reported for the cardinality problem is the value
  of the pure rank-``k`` relaxation, a valid but usually weak lower bound (``||S^T W|| >=
  ||S_k^T W||``).
* ``"greedy"``: add, one at a time, the sample that keeps ``||z||`` smallest (textbook while
  ``m n d`` is small; beyond, every sample is scored through the sketch and the exact best of the
  64 best estimates is taken, with exact rescoring every 1,000 steps).
* ``"auto"``: ``"exact"`` (warm-started with the heuristic's answer) when ``n <= exact_max_n``,
  else ``"relaxation"``.

Every function returns a :class:`PruningSolution` with the objective reached, the bound the solver
proved where it has one, the method path, the status and the time taken. With ``verbose=False``
(the default) OR-Tools prints nothing; ``verbose=True`` shows SCIP's log.

The package is laid out by phase: :mod:`.solve` (the public solvers and their shared skeleton),
:mod:`.cardinality` and :mod:`.epsilon` (what differs between the two problems), :mod:`.exact`
(MathOpt + SCIP), :mod:`.sketch` (truncated SVD), :mod:`.relaxation` (PDLP and rounding),
:mod:`.local_search` (swap, add and growth moves), :mod:`.greedy`, :mod:`.state` (the incremental
``z``, ``a`` bookkeeping), :mod:`.run`, :mod:`.result` and :mod:`.common` (checks and norms).
"""

# ``_greedy``, ``_make_sketch`` and ``_row_sq_norms`` are private but stay importable from here:
# the tests compare the sketch-screened greedy with the textbook one through them.
from lightning_prune.influence.solvers.common import _row_sq_norms as _row_sq_norms
from lightning_prune.influence.solvers.common import subset_norm
from lightning_prune.influence.solvers.greedy import _greedy as _greedy
from lightning_prune.influence.solvers.greedy import greedy_cardinality, greedy_epsilon
from lightning_prune.influence.solvers.result import PruningSolution
from lightning_prune.influence.solvers.sketch import _make_sketch as _make_sketch
from lightning_prune.influence.solvers.sketch import truncated_svd
from lightning_prune.influence.solvers.solve import solve_cardinality, solve_epsilon

__all__ = [
    "PruningSolution",
    "greedy_cardinality",
    "greedy_epsilon",
    "solve_cardinality",
    "solve_epsilon",
    "subset_norm",
    "truncated_svd",
]
