"""CP-SAT model for small batches with side constraints a flow cannot hold (money budgets per project).

One Boolean per eligible pair; the same constraints as the flow (labels_needed, the nested EDF limits per
deadline bucket, which include the capacity, project slot limits) plus sum(price) <= budget per project.
The objective is the flow's: minimise sum(price - M x priority). With objective="production" a second
solve keeps that optimum fixed and minimises the quality penalty.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import numpy as np
from ortools.sat.python import cp_model

from routing.arrays import Arrays, build_buckets, eligible_pairs
from routing.exact import EngineSolution, empty_solution
from routing.flow import INT64_MAX, placeable, priority_weight
from routing.result import StatValue

_STATUS = {
    cp_model.OPTIMAL: "optimal",
    cp_model.FEASIBLE: "feasible",
    cp_model.INFEASIBLE: "infeasible",
    cp_model.UNKNOWN: "timeout",
}


def solve_cpsat(
    arrays: Arrays, *, time_limit_s: float | None = None, prefer_quality: bool = False
) -> EngineSolution:
    """Solve with CP-SAT; the status says honestly whether optimality was proven within the time limit."""
    started = time.perf_counter()
    arrays = placeable(arrays)
    buckets = build_buckets(arrays)
    pair_tasks, pair_annotators = eligible_pairs(arrays)
    weight = priority_weight(arrays)
    costs = arrays.annotator_price[pair_annotators] - weight * arrays.task_priority[pair_tasks]
    stats: dict[str, StatValue] = {
        "engine": "cp-sat",
        "eligible_pairs": len(pair_tasks),
        "arcs": 0,
        "rounds": 1,
        "priority_weight": weight,
    }
    total_magnitude = int(np.abs(costs).astype(object).sum()) if len(costs) else 0
    if total_magnitude >= INT64_MAX // 2:
        stats.update(build_s=time.perf_counter() - started, solve_s=0.0, certified=False, gap_bound=None)
        return empty_solution("overflow", stats, f"objective magnitude {total_magnitude} exceeds int64")

    model = cp_model.CpModel()
    chosen = [model.new_bool_var(f"x{i}") for i in range(len(pair_tasks))]
    by_task: dict[int, list[int]] = defaultdict(list)
    by_project: dict[int, list[int]] = defaultdict(list)
    for i, task in enumerate(pair_tasks.tolist()):
        by_task[task].append(i)
        project = int(arrays.task_project[task])
        if project >= 0:
            by_project[project].append(i)
    for task, pairs in by_task.items():
        model.add(sum(chosen[i] for i in pairs) <= int(arrays.task_need[task]))

    # EDF: for each bucket (EDF limit v) of an annotator, the pairs in that bucket or earlier ones <= v.
    pair_buckets = buckets.lookup(arrays, pair_tasks, pair_annotators)
    order = np.lexsort((pair_buckets, pair_annotators))
    boundaries = np.flatnonzero(np.diff(pair_annotators[order])) + 1
    for group in np.split(order, boundaries):
        group_buckets = pair_buckets[group].tolist()
        prefix = []
        for k, index in enumerate(group.tolist()):
            prefix.append(chosen[index])
            if k + 1 == len(group_buckets) or group_buckets[k + 1] != group_buckets[k]:
                model.add(sum(prefix) <= int(buckets.chain.value[group_buckets[k]]))

    for project, pairs in by_project.items():
        if arrays.project_max_slots[project] >= 0:
            model.add(sum(chosen[i] for i in pairs) <= int(arrays.project_max_slots[project]))
        if arrays.project_budget[project] >= 0:
            spend = sum(int(arrays.annotator_price[pair_annotators[i]]) * chosen[i] for i in pairs)
            model.add(spend <= int(arrays.project_budget[project]))
    primary = sum(int(c) * x for c, x in zip(costs.tolist(), chosen, strict=True))
    model.minimize(primary)
    stats["build_s"] = time.perf_counter() - started

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = max(1, min(8, os.cpu_count() or 1))
    if time_limit_s is not None:
        solver.parameters.max_time_in_seconds = max(0.01, time_limit_s - (time.perf_counter() - started))
    solving = time.perf_counter()
    status = solver.solve(model)
    word = _STATUS.get(status, "overflow")
    values = [solver.boolean_value(x) for x in chosen] if word in ("optimal", "feasible") else []
    gap = int(solver.objective_value - solver.best_objective_bound) if word == "feasible" else None
    if word == "optimal" and prefer_quality and chosen:
        # Keep the lexicographic optimum and minimise the quality penalty among its equals.
        achieved = int(costs[np.asarray(values, dtype=bool)].sum())  # exact, unlike the float objective_value
        model.add(primary == achieved)
        for x, value in zip(chosen, values, strict=True):
            model.add_hint(x, value)
        penalties = arrays.annotator_penalty[pair_annotators].tolist()
        model.minimize(sum(p * x for p, x in zip(penalties, chosen, strict=True)))
        if time_limit_s is not None:
            solver.parameters.max_time_in_seconds = max(0.01, time_limit_s - (time.perf_counter() - started))
        if solver.solve(model) in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            values = [solver.boolean_value(x) for x in chosen]
    picked = np.flatnonzero(np.asarray(values, dtype=bool)) if values else np.zeros(0, dtype=np.int64)
    stats["solve_s"] = time.perf_counter() - solving
    stats["certified"] = word == "optimal"
    stats["gap_bound"] = 0 if word == "optimal" else gap
    if word not in ("optimal", "feasible"):
        message = "" if word != "overflow" else f"CP-SAT: {solver.status_name(status)}"
        return empty_solution(word, stats, message)
    return EngineSolution(
        status=word, tasks=pair_tasks[picked], annotators=pair_annotators[picked], stats=stats
    )
