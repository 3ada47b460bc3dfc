"""Influence-based dataset pruning (Yang et al., ICLR 2023): last-layer influence vectors and the
OR-Tools formulations of the two selection problems."""

from lightning_prune.influence.pruner import InfluencePruner
from lightning_prune.influence.solvers import (
    PruningSolution,
    greedy_cardinality,
    greedy_epsilon,
    solve_cardinality,
    solve_epsilon,
    subset_norm,
    truncated_svd,
)
from lightning_prune.influence.vectors import (
    InfluenceVectors,
    LastLayerInputs,
    collect_last_layer_inputs,
    hessian_vector_product,
    influence_from_inputs,
    influence_vectors,
    last_layer_hessian,
)
from lightning_prune.models.layers import find_last_linear  # re-exported: its public home before 0.2

__all__ = [
    "InfluencePruner",
    "InfluenceVectors",
    "LastLayerInputs",
    "PruningSolution",
    "collect_last_layer_inputs",
    "find_last_linear",
    "greedy_cardinality",
    "greedy_epsilon",
    "hessian_vector_product",
    "influence_from_inputs",
    "influence_vectors",
    "last_layer_hessian",
    "solve_cardinality",
    "solve_epsilon",
    "subset_norm",
    "truncated_svd",
]
