"""An independent constraint checker for results: plain Python, sharing no code path with the solvers."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Mapping

from routing.instance import Instance, ProjectBudget
from routing.result import STATUSES, Result


class InvalidResultError(AssertionError):
    """A result breaks at least one constraint; `violations` lists every one found."""

    def __init__(self, violations: list[str]) -> None:
        shown = "; ".join(violations[:10])
        more = f" (and {len(violations) - 10} more)" if len(violations) > 10 else ""
        super().__init__(f"{len(violations)} violation(s): {shown}{more}")
        self.violations = violations


def _labels_by(labels_per_hour: float, deadline_hours: float) -> int:
    product = labels_per_hour * deadline_hours
    return 2**62 if product >= 2**62 else math.floor(product)


def find_violations(
    instance: Instance, result: Result, project_budgets: Mapping[str, ProjectBudget] | None = None
) -> list[str]:
    """Every constraint the result breaks, as readable sentences (empty when the result is valid)."""
    budgets = instance.project_budgets if project_budgets is None else project_budgets
    tasks = {task.id: task for task in instance.tasks}
    annotators = {annotator.id: annotator for annotator in instance.annotators}
    problems: list[str] = []
    if result.status not in STATUSES:
        problems.append(f"unknown status {result.status!r}")

    per_task: dict[str, list[str]] = defaultdict(list)
    per_annotator: dict[str, list[str]] = defaultdict(list)
    for task_id, annotator_id in result.assignments:
        task = tasks.get(task_id)
        annotator = annotators.get(annotator_id)
        if task is None or annotator is None:
            problems.append(f"assignment ({task_id}, {annotator_id}) names an unknown task or annotator")
            continue
        level = annotator.skills.get(task.skill)
        if level is None or level < task.min_level:
            problems.append(f"{annotator_id} lacks level {task.min_level} in {task.skill} for {task_id}")
        if annotator.price > task.max_price:
            problems.append(
                f"{annotator_id} costs {annotator.price} > max_price {task.max_price} of {task_id}"
            )
        if annotator_id in task.excluded:
            problems.append(f"{annotator_id} is excluded from {task_id}")
        per_task[task_id].append(annotator_id)
        per_annotator[annotator_id].append(task_id)

    for task_id, given in per_task.items():
        repeated = [a for a, n in Counter(given).items() if n > 1]
        if repeated:
            problems.append(f"{task_id} has the same annotator more than once: {sorted(repeated)}")
        if len(given) > tasks[task_id].labels_needed:
            problems.append(
                f"{task_id} got {len(given)} labels > labels_needed {tasks[task_id].labels_needed}"
            )

    for annotator_id, taken in per_annotator.items():
        annotator = annotators[annotator_id]
        if len(taken) > annotator.capacity:
            problems.append(f"{annotator_id} got {len(taken)} tasks > capacity {annotator.capacity}")
        deadlines = sorted(tasks[t].deadline_hours for t in taken)
        for task_id in taken:
            deadline = tasks[task_id].deadline_hours
            due_by_then = bisect_right(deadlines, deadline)
            limit = _labels_by(annotator.labels_per_hour, deadline)
            if due_by_then > limit:
                problems.append(
                    f"{annotator_id} cannot finish {task_id} by {deadline} h: {due_by_then} tasks due by then, "
                    f"{limit} labels possible"
                )
                break

    for project, budget in budgets.items():
        slots = 0
        spent = 0
        for task_id, given in per_task.items():
            if tasks[task_id].project == project:
                slots += len(given)
                spent += sum(annotators[a].price for a in given)
        if budget.max_slots is not None and slots > budget.max_slots:
            problems.append(f"project {project} got {slots} slots > max_slots {budget.max_slots}")
        if budget.budget is not None and spent > budget.budget:
            problems.append(f"project {project} spends {spent} > budget {budget.budget}")

    problems.extend(_totals_violations(instance, result, per_task))
    return problems


def _totals_violations(instance: Instance, result: Result, per_task: Mapping[str, list[str]]) -> list[str]:
    tasks = {task.id: task for task in instance.tasks}
    prices = {annotator.id: annotator.price for annotator in instance.annotators}
    problems = []
    valid = [(t, a) for t, a in result.assignments if t in tasks and a in prices]
    if result.assigned != len(result.assignments):
        problems.append(f"assigned = {result.assigned}, but {len(result.assignments)} assignments are listed")
    priority = sum(tasks[t].priority for t, _ in valid)
    if result.priority_total != priority:
        problems.append(f"priority_total = {result.priority_total}, assignments sum to {priority}")
    cost = sum(prices[a] for _, a in valid)
    if result.cost_total != cost:
        problems.append(f"cost_total = {result.cost_total}, assignments sum to {cost}")
    expected = {
        task.id: task.labels_needed - len(per_task.get(task.id, ()))
        for task in instance.tasks
        if task.labels_needed > len(per_task.get(task.id, ()))
    }
    if dict(result.unfilled) != expected:
        problems.append("unfilled does not match labels_needed minus the assignments")
    if result.status in ("overflow", "infeasible", "timeout") and result.assignments:
        problems.append(f"status {result.status} but assignments are listed")
    return problems


def check_result(
    instance: Instance, result: Result, project_budgets: Mapping[str, ProjectBudget] | None = None
) -> None:
    """Raise InvalidResultError listing every violated constraint; return None when the result is valid."""
    violations = find_violations(instance, result, project_budgets)
    if violations:
        raise InvalidResultError(violations)
