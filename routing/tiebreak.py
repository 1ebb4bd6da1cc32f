"""The "production" objective: among all exact optima, prefer higher-quality annotators.

It never trades a unit of priority or price for quality. Given optimal potentials p, the optimal flows are
exactly the feasible flows satisfying complementary slackness with p: arcs of negative reduced cost stay
full, arcs of positive reduced cost stay empty, arcs of zero reduced cost are free. That face is itself a
flow problem (fixed arcs move into node supplies), solved here with the quality penalty as its only cost.
No big multiplier stacks quality under price under priority, so no magnitude can overflow.
"""

from __future__ import annotations

import numpy as np
from ortools.graph.python import min_cost_flow

from routing.arrays import Arrays, IntArray
from routing.flow import SINK, SOURCE, Network


def quality_tiebreak(
    arrays: Arrays, network: Network, flows: IntArray, potentials: IntArray, pair_annotators: IntArray
) -> IntArray:
    """Flows of an optimum with the least quality penalty; `potentials` must be optimal for `network`."""
    placed = int(flows[(network.tails == SOURCE) & (network.heads != SINK)].sum())
    # The overflow arc (source -> sink, cost 0) takes part in the face like any other arc.
    implied = [] if network.explicit_overflow else [0]
    tails = np.concatenate([network.tails.astype(np.int64), np.full(len(implied), SOURCE)])
    heads = np.concatenate([network.heads.astype(np.int64), np.full(len(implied), SINK)])
    capacities = np.concatenate([network.capacities, np.full(len(implied), network.supply)])
    current = np.concatenate([flows, np.full(len(implied), network.supply - placed)])
    shifted = network.costs + network.shift[network.heads] - network.shift[network.tails]
    shifted = np.concatenate([shifted, np.zeros(len(implied), dtype=np.int64)])
    reduced = shifted + potentials[tails] - potentials[heads]
    lower = np.where(reduced < 0, capacities, 0)
    upper = np.where(reduced > 0, 0, capacities)
    if np.any(current < lower) or np.any(current > upper):
        raise RuntimeError("the flow does not satisfy complementary slackness with its potentials")

    supplies = np.zeros(network.n_nodes, dtype=np.int64)
    supplies[SOURCE] = network.supply
    supplies[SINK] = -network.supply
    np.subtract.at(supplies, tails, lower)
    np.add.at(supplies, heads, lower)
    free = np.flatnonzero(upper > lower)
    costs = np.zeros(len(tails), dtype=np.int64)
    costs[: network.n_pairs] = arrays.annotator_penalty[pair_annotators]

    solver = min_cost_flow.SimpleMinCostFlow()
    solver.add_arcs_with_capacity_and_unit_cost(
        tails[free].astype(np.int32), heads[free].astype(np.int32), (upper - lower)[free], costs[free]
    )
    solver.set_nodes_supplies(np.arange(network.n_nodes, dtype=np.int32), supplies)
    status = solver.solve()
    if status != solver.OPTIMAL:
        # The current flow lies in the face, so the face problem is feasible: anything else is a bug.
        raise RuntimeError(f"quality tie-break: OR-Tools returned {status.name}")
    face_flows = np.asarray(solver.flows(np.arange(len(free), dtype=np.int32)), dtype=np.int64)
    final = lower.copy()
    final[free] += face_flows
    return final[: len(flows)]
