"""The public entry point: validate, convert to arrays, split into skill pools, dispatch, merge."""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from routing.arrays import Arrays, EngineOverflow, IntArray, instance_arrays
from routing.components import split_components
from routing.cpsat import solve_cpsat
from routing.exact import EngineSolution, empty_solution, solve_exact
from routing.flow import placeable, priority_weight
from routing.greedy import solve_greedy
from routing.guided import GuidedOptions, solve_guided
from routing.instance import Instance, InstanceError, ProjectBudget, validate_budgets, validate_instance
from routing.result import Assignment, Result, StatValue, build_result, empty_result

METHODS = ("flow", "greedy", "cpsat", "guided")
OBJECTIVES = ("exact", "production")


@dataclass(frozen=True)
class SolveOptions:
    """Engine tuning; the defaults suit a 2-core machine."""

    # `flow` solves one shot up to this many task x annotator cells per pool, and switches to the
    # guided method (run to certification, so still exact) above it.
    guided_threshold_cells: int = 4_000_000
    guided: GuidedOptions = field(default_factory=GuidedOptions)
    # Processes for independent skill pools (spawned: a calling script needs the __main__ guard).
    workers: int = 2
    parallel_min_cells: int = 4_000_000  # below this, pools are solved in-process one after another


@dataclass(frozen=True)
class PartJob:
    """One skill pool to solve, self-contained so that it can be sent to a worker process."""

    arrays: Arrays
    method: str
    prefer_quality: bool
    options: SolveOptions
    warm_shadow: IntArray | None
    seconds_left: float | None
    weight: int  # the priority weight M shared by every pool, so that their objectives add up


@dataclass
class PartOutcome:
    """A pool's solution (local indices mapped back to the instance) and the worker's peak memory."""

    solution: EngineSolution
    task_origin: IntArray
    annotator_origin: IntArray
    shadow_origin: IntArray
    peak_rss_mb: float
    pid: int


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def solve_part(job: PartJob) -> PartOutcome:
    """Solve one skill pool with `flow` (one shot or guided by size) or `guided`."""
    arrays = job.arrays
    deadline = None if job.seconds_left is None else time.perf_counter() + job.seconds_left
    try:
        one_shot = job.method == "flow" and arrays.block_cells() <= job.options.guided_threshold_cells
        if one_shot:
            solution = solve_exact(arrays, prefer_quality=job.prefer_quality, weight=job.weight)
        else:
            # Under `flow`, the guided method runs to certification: the answer stays exact.
            solution = solve_guided(
                arrays,
                job.options.guided,
                warm_shadow=job.warm_shadow,
                deadline=deadline if job.method == "guided" else None,
                prefer_quality=job.prefer_quality,
                weight=job.weight,
            )
    except EngineOverflow as error:
        solution = empty_solution("overflow", {"engine": job.method}, str(error))
    shadow = solution.shadow_prices
    return PartOutcome(
        solution=solution,
        task_origin=arrays.task_origin,
        annotator_origin=arrays.annotator_origin,
        shadow_origin=arrays.annotator_origin if shadow is not None else np.zeros(0, dtype=np.int64),
        peak_rss_mb=_peak_rss_mb(),
        pid=os.getpid(),
    )


def _share_sample(options: SolveOptions, share: float) -> SolveOptions:
    # The sampling budget is for the whole instance: each pool samples the same share of its tasks.
    sample_cells = max(1, round(options.guided.sample_cells * share))
    return replace(options, guided=replace(options.guided, sample_cells=sample_cells))


def _merge_status(statuses: list[str]) -> str:
    for worst in ("overflow", "infeasible", "timeout", "feasible"):
        if worst in statuses:
            return worst
    return "optimal"


def _warm_array(instance: Instance, warm: Mapping[str, float] | None, arrays: Arrays) -> IntArray | None:
    if warm is None:
        return None
    ids = [instance.annotators[i].id for i in arrays.annotator_origin.tolist()]
    return np.asarray([max(0, round(warm.get(annotator_id, 0))) for annotator_id in ids], dtype=np.int64)


def _money_budgets(budgets: Mapping[str, ProjectBudget]) -> list[str]:
    return [project for project, budget in budgets.items() if budget.budget is not None]


def solve(
    instance: Instance,
    method: str = "flow",
    time_limit_s: float | None = None,
    project_budgets: Mapping[str, ProjectBudget] | None = None,
    warm_potentials: Mapping[str, float] | None = None,
    *,
    objective: str = "exact",
    options: SolveOptions | None = None,
) -> Result:
    """Assign annotators to task slots: maximise placed priority, then minimise the price paid.

    `method`: "flow" (exact min-cost flow; guided column generation on large pools, still certified),
    "guided" (column generation; stops early at `time_limit_s` with a gap bound), "greedy" (the pull-queue
    baseline) or "cpsat" (small batches; the only method that holds money budgets). `objective`:
    "exact", or "production", which keeps the exact optimum and breaks its ties by annotator quality.
    `time_limit_s` bounds `guided` (checked between rounds; the first round always completes) and `cpsat`;
    `flow` always runs to the exact optimum. `warm_potentials`: the `potentials` of a previous Result (per
    annotator shadow prices), to replace the sampling step of `guided`.
    """
    if method not in METHODS:
        raise InstanceError("method", f"expected one of {', '.join(METHODS)}, got {method!r}")
    if objective not in OBJECTIVES:
        raise InstanceError("objective", f"expected one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if time_limit_s is not None and not time_limit_s > 0:
        raise InstanceError("time_limit_s", f"must be > 0, got {time_limit_s!r}")
    validate_instance(instance)
    if project_budgets is not None:
        validate_budgets("project_budgets", project_budgets)
    budgets = instance.project_budgets if project_budgets is None else project_budgets
    money = _money_budgets(budgets)
    if money and method in ("flow", "guided"):
        raise InstanceError(
            f"project_budgets.{money[0]}.budget",
            "a money budget over per-annotator prices is held exactly only by method='cpsat' "
            "(a flow can hold slot limits, max_slots, but not sums of different prices)",
        )
    options = options or SolveOptions()
    started = time.perf_counter()
    prefer_quality = objective == "production"
    try:
        arrays = instance_arrays(instance, budgets)
    except EngineOverflow as error:
        return empty_result(instance, status="overflow", method=method, stats={}, message=str(error))

    if method in ("greedy", "cpsat"):
        if method == "greedy":
            solution = solve_greedy(
                arrays,
                [t.id for t in instance.tasks],
                [a.id for a in instance.annotators],
                prefer_quality=prefer_quality,
            )
        else:
            solution = solve_cpsat(arrays, time_limit_s=time_limit_s, prefer_quality=prefer_quality)
        outcomes = [
            PartOutcome(
                solution=solution,
                task_origin=arrays.task_origin,
                annotator_origin=arrays.annotator_origin,
                shadow_origin=np.zeros(0, dtype=np.int64),
                peak_rss_mb=_peak_rss_mb(),
                pid=os.getpid(),
            )
        ]
        split_s = 0.0
    else:
        parts = split_components(arrays)
        weight = priority_weight(placeable(arrays))
        split_s = time.perf_counter() - started
        total_cells = max(1, sum(part.block_cells() for part in parts))
        jobs = [
            PartJob(
                arrays=part,
                method=method,
                prefer_quality=prefer_quality,
                options=_share_sample(options, part.block_cells() / total_cells),
                warm_shadow=_warm_array(instance, warm_potentials, part),
                seconds_left=None if time_limit_s is None else time_limit_s - split_s,
                weight=weight,
            )
            for part in parts
        ]
        outcomes, where = _run_jobs(jobs, options)
        result = _merge(instance, method, outcomes, started=started, split_s=split_s)
        return replace(result, stats=MappingProxyType({**result.stats, "parallel": where}))
    return _merge(instance, method, outcomes, started=started, split_s=split_s)


def _run_jobs(jobs: list[PartJob], options: SolveOptions) -> tuple[list[PartOutcome], str]:
    total_cells = sum(job.arrays.block_cells() for job in jobs)
    if options.workers <= 1 or len(jobs) <= 1 or total_cells < options.parallel_min_cells:
        return [solve_part(job) for job in jobs], "in-process"
    # "spawn" starts clean interpreters: no inherited locks or threads from the caller (a web worker, a
    # job runner); the pools are small NumPy arrays, cheap to send. Like any spawn pool it re-imports the
    # caller's main module, so a script calling solve() needs the `if __name__ == "__main__":` guard;
    # without it the workers die at start-up and the pools are solved here, one after another.
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=min(options.workers, len(jobs)), mp_context=context) as pool:
            return list(pool.map(solve_part, jobs)), f"{min(options.workers, len(jobs))} processes"
    except BrokenProcessPool:
        return [solve_part(job) for job in jobs], "in-process (worker processes failed to start)"


def _peak_memory(outcomes: list[PartOutcome]) -> float:
    """This process's peak RSS plus each worker process's: an upper bound on the memory used at once."""
    workers: dict[int, float] = {}
    for outcome in outcomes:
        if outcome.pid != os.getpid():
            workers[outcome.pid] = max(workers.get(outcome.pid, 0.0), outcome.peak_rss_mb)
    return _peak_rss_mb() + sum(workers.values())


def _merge(
    instance: Instance, method: str, outcomes: list[PartOutcome], *, started: float, split_s: float
) -> Result:
    statuses = [outcome.solution.status for outcome in outcomes]
    status = _merge_status(statuses) if outcomes else "optimal"
    assignments: list[Assignment] = []
    shadow: dict[str, int] = {}
    messages = [outcome.solution.message for outcome in outcomes if outcome.solution.message]
    if status not in ("overflow", "infeasible", "timeout"):
        for outcome in outcomes:
            solution = outcome.solution
            tasks = outcome.task_origin[solution.tasks].tolist()
            annotators = outcome.annotator_origin[solution.annotators].tolist()
            assignments.extend(
                Assignment(instance.tasks[t].id, instance.annotators[a].id)
                for t, a in zip(tasks, annotators, strict=True)
            )
            if solution.shadow_prices is not None:
                for origin, price in zip(
                    outcome.shadow_origin.tolist(), solution.shadow_prices.tolist(), strict=True
                ):
                    if price > 0:
                        shadow[instance.annotators[origin].id] = int(price)
    part_stats = [outcome.solution.stats for outcome in outcomes]

    def number(value: StatValue) -> float:
        return float(value) if isinstance(value, int | float) else 0.0

    def total(name: str) -> float:
        return sum(number(s.get(name)) for s in part_stats)

    gap_values = [s.get("gap_bound") for s in part_stats]
    stats: dict[str, StatValue] = {
        "engine": ",".join(sorted({str(s.get("engine")) for s in part_stats})) or method,
        "components": len(outcomes),
        "build_s": round(split_s + total("build_s"), 4),
        "solve_s": round(total("solve_s"), 4),
        "wall_s": round(time.perf_counter() - started, 4),
        "arcs": int(total("arcs")) if any("arcs" in s for s in part_stats) else None,
        "eligible_pairs": int(total("eligible_pairs"))
        if any("eligible_pairs" in s for s in part_stats)
        else None,
        "rounds": max((int(number(s.get("rounds"))) for s in part_stats), default=0),
        "certified": all(bool(s.get("certified")) for s in part_stats),
        "gap_bound": None
        if any(not isinstance(g, int) for g in gap_values)
        else sum(g for g in gap_values if isinstance(g, int)),
        "peak_rss_mb": round(_peak_memory(outcomes), 1),
    }
    weights = {s.get("priority_weight") for s in part_stats if s.get("priority_weight") is not None}
    if len(weights) == 1:
        stats["priority_weight"] = weights.pop()
    if len(outcomes) == 1 and "round_log" in part_stats[0]:
        stats["round_log"] = part_stats[0]["round_log"]
    return build_result(
        instance,
        status=status,
        method=method,
        assignments=assignments,
        stats=stats,
        message="; ".join(messages),
        potentials=shadow,
    )
