"""The pull-queue baseline: earliest deadline first, each slot to the cheapest eligible annotator with room.

Tasks are taken by deadline (ties: higher priority, then id), so every annotator receives its tasks in
deadline order and the EDF condition for a new task reduces to: tasks already taken + 1 <= the number of
labels the annotator can finish by this deadline. Budgets are respected as slots are handed out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from routing.arrays import Arrays, IntArray, drop_excluded
from routing.exact import EngineSolution
from routing.result import StatValue


def _ranks(ids: Sequence[str]) -> IntArray:
    order = sorted(range(len(ids)), key=ids.__getitem__)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return rank


def solve_greedy(
    arrays: Arrays, task_ids: Sequence[str], annotator_ids: Sequence[str], *, prefer_quality: bool = False
) -> EngineSolution:
    """Run the pull queue; `prefer_quality` breaks price ties by quality instead of by id."""
    started = time.perf_counter()
    task_rank = _ranks(task_ids)
    annotator_rank = _ranks(annotator_ids)
    queue = np.lexsort((task_rank, -arrays.task_priority, arrays.task_deadline))

    # Per skill, candidates sorted by price (then quality or id), so the cheapest with room comes first.
    by_price: list[tuple[IntArray, IntArray, IntArray]] = []
    for members, levels in zip(arrays.skill_annotators, arrays.skill_levels, strict=True):
        tie = arrays.annotator_penalty[members] if prefer_quality else annotator_rank[members]
        order = np.lexsort((annotator_rank[members], tie, arrays.annotator_price[members]))
        by_price.append((members[order], levels[order], arrays.annotator_price[members][order]))

    taken = np.zeros(arrays.n_annotators, dtype=np.int64)
    slots_used = np.zeros(len(arrays.project_names), dtype=np.int64)
    money_used = np.zeros(len(arrays.project_names), dtype=np.int64)
    chosen_tasks: list[int] = []
    chosen_annotators: list[int] = []
    for task in queue.tolist():
        need = int(arrays.task_need[task])
        if need <= 0:
            continue
        members, levels, prices = by_price[int(arrays.task_skill[task])]
        affordable = int(np.searchsorted(prices, arrays.task_max_price[task], side="right"))
        if affordable == 0:
            continue
        candidates = members[:affordable]
        deadline = float(arrays.task_deadline[task])
        limit = np.minimum(
            np.floor(arrays.annotator_lph[candidates] * deadline),
            arrays.annotator_capacity[candidates].astype(np.float64),
        )
        ok = (levels[:affordable] >= arrays.task_min_level[task]) & (taken[candidates] + 1 <= limit)
        drop_excluded(arrays, np.asarray([task], dtype=np.int64), candidates, ok[None, :])
        project = int(arrays.task_project[task])
        for annotator in candidates[ok].tolist():
            if need == 0:
                break
            if project >= 0:
                if 0 <= arrays.project_max_slots[project] <= slots_used[project]:
                    break
                price = int(arrays.annotator_price[annotator])
                if 0 <= arrays.project_budget[project] < money_used[project] + price:
                    break  # candidates are sorted by price: nobody further fits either
                slots_used[project] += 1
                money_used[project] += price
            taken[annotator] += 1
            chosen_tasks.append(task)
            chosen_annotators.append(annotator)
            need -= 1
    stats: dict[str, StatValue] = {
        "engine": "greedy",
        "build_s": 0.0,
        "solve_s": time.perf_counter() - started,
        "certified": False,
        "gap_bound": None,
        "rounds": 1,
    }
    return EngineSolution(
        status="feasible",
        tasks=np.asarray(chosen_tasks, dtype=np.int64),
        annotators=np.asarray(chosen_annotators, dtype=np.int64),
        stats=stats,
    )
