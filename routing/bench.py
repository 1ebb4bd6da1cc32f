"""`python -m routing bench`: the standard seeded instances, every method side by side with greedy.

Each measurement runs in a fresh process (multiprocessing "spawn"), so that its peak memory is its own
and no earlier run warms caches for it. Instance generation happens in that process but is not timed.
Progress goes to the given stream (stderr from the CLI); the table is returned as Markdown.
"""

from __future__ import annotations

import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TextIO

import numpy as np

from routing.arrays import instance_arrays
from routing.generate import generate_instance
from routing.guided import GuidedOptions, solve_guided
from routing.instance import Instance
from routing.solve import SolveOptions, _peak_memory, solve

SIZES: dict[str, tuple[int, int]] = {"S": (1_000, 100), "M": (10_000, 1_000), "L": (100_000, 10_000)}
NEXT_SNAPSHOT_CHURN = 0.1  # share of tasks replaced between two plans, for the warm-start row


@dataclass(frozen=True)
class Measurement:
    """One timed solve to run in its own process."""

    size: str
    seed: int
    kind: str  # "guided", "guided-warm", "reference", "greedy", "at-volume"
    max_rounds: int | None = None
    volume: int | None = None
    warm: dict[str, int] | None = None


def next_snapshot(instance: Instance, seed: int) -> Instance:
    """The next plan's input: the first 10% of tasks done, as many new ones arrived (same market)."""
    n_tasks = len(instance.tasks)
    churn = int(n_tasks * NEXT_SNAPSHOT_CHURN)
    n_skills = len(
        {task.skill for task in instance.tasks} | {s for a in instance.annotators for s in a.skills}
    )
    arrivals = generate_instance(churn, 0, n_skills=n_skills, seed=seed + 7919).tasks
    renamed = tuple(replace(task, id=f"n{task.id}", project=f"n{task.project}") for task in arrivals)
    return replace(instance, tasks=instance.tasks[churn:] + renamed)


def _instance_for(job: Measurement) -> Instance:
    n_tasks, n_annotators = SIZES[job.size]
    instance = generate_instance(n_tasks, n_annotators, seed=job.seed)
    return next_snapshot(instance, job.seed) if job.kind == "guided-warm" else instance


def measure(job: Measurement) -> dict[str, Any]:
    """Run one measurement (in a worker process); return its figures."""
    instance = _instance_for(job)
    started = time.perf_counter()
    if job.kind == "at-volume":
        # The cheapest way to place exactly greedy's number of slots: unit priorities, volume-capped flow,
        # solved by the guided method to certification in each pool.
        arrays = instance_arrays(instance)
        arrays = replace(arrays, task_priority=np.ones(arrays.n_tasks, dtype=np.int64))
        # A volume is global, so the pools are priced together in one flow.
        solution = solve_guided(arrays, GuidedOptions(), volume=job.volume)
        cost = int(arrays.annotator_price[solution.annotators].sum())
        placed = len(solution.annotators)
        certified = solution.status == "optimal"
        wall = time.perf_counter() - started
        return {
            "placed": placed,
            "cost": cost,
            "wall_s": wall,
            "peak_mb": _peak_memory([]),
            "certified": certified,
        }
    method = {"guided": "guided", "guided-warm": "guided", "reference": "flow", "greedy": "greedy"}[job.kind]
    options = SolveOptions()
    if job.kind == "reference":
        options = SolveOptions(guided_threshold_cells=2**62)
    if job.max_rounds is not None:
        options = replace(options, guided=replace(options.guided, max_rounds=job.max_rounds))
    result = solve(instance, method=method, warm_potentials=job.warm, options=options)
    wall = time.perf_counter() - started
    stats = result.stats
    return {
        "placed": result.assigned,
        "priority": result.priority_total,
        "cost": result.cost_total,
        "wall_s": wall,
        "build_s": stats.get("build_s"),
        "solve_s": stats.get("solve_s"),
        "peak_mb": stats.get("peak_rss_mb"),
        "arcs": stats.get("arcs"),
        "eligible_pairs": stats.get("eligible_pairs"),
        "rounds": stats.get("rounds"),
        "certified": stats.get("certified"),
        "components": stats.get("components"),
        "status": result.status,
        "potentials": dict(result.potentials) if job.kind == "guided" and job.max_rounds is None else None,
        "demand": sum(task.labels_needed for task in instance.tasks),
    }


def _run(job: Measurement, progress: TextIO | None) -> dict[str, Any]:
    if progress is not None:
        rounds = f", {job.max_rounds} round(s)" if job.max_rounds else ""
        progress.write(f"[bench] {job.size}: {job.kind}{rounds} ...\n")
        progress.flush()
    # A fresh non-daemonic process (a ProcessPoolExecutor worker), so that the solve may start its own
    # worker processes for the skill pools.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        figures: dict[str, Any] = pool.submit(measure, job).result()
    if progress is not None:
        progress.write(
            f"[bench] {job.size}: {job.kind} placed {figures['placed']} cost {figures['cost']} "
            f"in {figures['wall_s']:.1f} s, peak {figures['peak_mb']:.0f} MB\n"
        )
        progress.flush()
    return figures


def _gap(figures: dict[str, Any], optimum: dict[str, Any]) -> str:
    if figures["placed"] != optimum["placed"]:
        return f"{figures['placed'] - optimum['placed']:+d} slots"
    if optimum["cost"] == 0:
        return "0"
    return f"{100.0 * (figures['cost'] - optimum['cost']) / optimum['cost']:+.4f}%"


def _row(size: str, label: str, figures: dict[str, Any], optimum: dict[str, Any] | None) -> str:
    def cell(value: Any, digits: int = 1) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    per_label = figures["cost"] / figures["placed"] if figures["placed"] else 0.0
    gap = _gap(figures, optimum) if optimum is not None else "-"
    return (
        f"| {size} | {label} | {cell(figures.get('eligible_pairs'))} | {cell(figures.get('arcs'))} "
        f"| {cell(figures.get('build_s'), 2)} | {cell(figures.get('solve_s'), 2)} | {cell(figures['wall_s'], 2)} "
        f"| {cell(figures.get('peak_mb'), 0)} | {cell(figures['placed'])} | {cell(figures['cost'])} "
        f"| {per_label:.1f} | {gap} | {cell(figures.get('rounds'))} | {cell(figures.get('certified'))} |"
    )


HEADER = (
    "| size | run | eligible pairs | arcs used | build s | solve s | wall s | peak MB | slots placed | cost | "
    "cost/label | gap to certified optimum | rounds | certified |\n"
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |\n"
)


def run_bench(
    sizes: list[str], *, reference: bool = True, seed: int = 1, progress: TextIO | None = None
) -> str:
    """Measure every size; return the Markdown table (and a line on the machine)."""
    rows: list[str] = []
    notes: list[str] = []
    for size in sizes:
        certified = _run(Measurement(size, seed, "guided"), progress)
        optimum = {"placed": certified["placed"], "cost": certified["cost"]}
        for rounds in range(1, int(certified["rounds"] or 1)):
            partial = _run(Measurement(size, seed, "guided", max_rounds=rounds), progress)
            rows.append(_row(size, f"guided, {rounds} round(s)", partial, optimum))
            within = partial["placed"] == optimum["placed"] and partial["cost"] <= optimum["cost"] * 1.001
            if within:
                break
        rows.append(_row(size, "guided, certified", certified, optimum))
        if certified.get("potentials"):
            warm_job = Measurement(size, seed, "guided-warm", warm=certified["potentials"])
            warm = _run(warm_job, progress)
            warm_first = _run(replace(warm_job, max_rounds=1), progress)
            warm_optimum = {"placed": warm["placed"], "cost": warm["cost"]}
            rows.append(_row(size, "guided warm (next snapshot), 1 round", warm_first, warm_optimum))
            rows.append(_row(size, "guided warm (next snapshot), certified", warm, warm_optimum))
        if reference:
            exact = _run(Measurement(size, seed, "reference"), progress)
            rows.append(_row(size, "flow one shot on all pairs, per pool (reference)", exact, optimum))
        greedy = _run(Measurement(size, seed, "greedy"), progress)
        rows.append(_row(size, "greedy (EDF pull queue)", greedy, optimum))
        at_volume = _run(Measurement(size, seed, "at-volume", volume=greedy["placed"]), progress)
        rows.append(_row(size, "optimum at greedy's volume", at_volume, None))
        if at_volume["cost"]:
            saving = 100.0 * (greedy["cost"] - at_volume["cost"]) / greedy["cost"]
            notes.append(
                f"- {size}: greedy placed {greedy['placed']:,} of {certified['demand']:,} demanded slots "
                f"(optimum {optimum['placed']:,}); at greedy's volume the optimum is {saving:.1f}% cheaper."
            )
    machine = f"{platform.machine()}, {multiprocessing.cpu_count()} cores, Python {platform.python_version()}"
    return HEADER + "\n".join(rows) + "\n\n" + "\n".join(notes) + f"\n\nMachine: {machine}.\n"
