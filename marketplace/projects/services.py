"""Projects: creation, changes, listing tasks and exporting results. Services flush; the caller commits."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.annotators.models import Skill
from marketplace.db import utcnow
from marketplace.errors import Conflict, InvalidInput
from marketplace.projects.label_schema import validate_schema, validate_value
from marketplace.projects.models import Project, ProjectStatus, ReviewPolicy, Task
from marketplace.work.models import Label, ReviewState

#: every review parameter with its default; a project's `review_params` always holds all of them
REVIEW_DEFAULTS: dict[str, Any] = {
    # share of an annotator's stream drawn from the project's gold items (0 = no gold mixed in)
    "gold_rate": 0.0,
    # whether a correct answer on a gold item is paid like any accepted label
    "pay_correct_gold": True,
    # an annotator whose gold accuracy falls below this after `gold_min_items` is paused for the project
    "gold_accuracy_floor": 0.6,
    "gold_min_items": 5,
    # consensus: the share of an item's labels that must agree for the majority to be accepted
    "agreement_threshold": 0.66,
    # consensus: labels bought beyond labels_per_item when there is no majority, before manual review
    "max_extra_labels": 2,
    # manual review: a label no reviewer decided within this many hours is accepted
    "review_window_hours": 72,
    # a label submitted faster than this many seconds after its lease is a fast answer (0: no such rule); it
    # goes to a reviewer instead of being accepted unseen
    "min_seconds_per_label": 0.0,
    # an annotator with this many fast answers in the project is blocked from it
    "fast_answer_limit": 3,
}

_RANGES: dict[str, tuple[float, float]] = {
    "gold_rate": (0.0, 0.5),
    "gold_accuracy_floor": (0.0, 1.0),
    "gold_min_items": (1, 1000),
    "agreement_threshold": (0.5, 1.0),
    "max_extra_labels": (0, 20),
    "review_window_hours": (1, 24 * 30),
    "min_seconds_per_label": (0.0, 3600.0),
    "fast_answer_limit": (1, 1000),
}

# The allowed status changes: a completed project is final.
_TRANSITIONS: dict[str, set[str]] = {
    ProjectStatus.DRAFT: {ProjectStatus.ACTIVE, ProjectStatus.COMPLETED},
    ProjectStatus.ACTIVE: {ProjectStatus.PAUSED, ProjectStatus.COMPLETED},
    ProjectStatus.PAUSED: {ProjectStatus.ACTIVE, ProjectStatus.COMPLETED},
    ProjectStatus.COMPLETED: set(),
}


def allowed_transitions(status: str) -> set[str]:
    """The statuses a project in `status` may change to (none once completed)."""
    return set(_TRANSITIONS[ProjectStatus(status)])


def _check_deadline(deadline: datetime) -> None:
    if deadline <= utcnow():
        raise InvalidInput("The deadline must be in the future.", details={"deadline": deadline.isoformat()})


def normalise_review_params(
    params: Mapping[str, Any] | None, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`params` over `base` (or the defaults), type- and range-checked."""
    merged = dict(base or REVIEW_DEFAULTS)
    for name, value in (params or {}).items():
        if name not in REVIEW_DEFAULTS:
            raise InvalidInput(
                f"Unknown review parameter {name!r}.", details={"review_params": sorted(REVIEW_DEFAULTS)}
            )
        expected = type(REVIEW_DEFAULTS[name])
        ok = (
            isinstance(value, bool)
            if expected is bool
            else isinstance(value, (int, float)) and not isinstance(value, bool)
            if expected is float
            else type(value) is int
        )
        if not ok:
            raise InvalidInput(
                f"review_params.{name} must be a {expected.__name__}.",
                details={f"review_params.{name}": value},
            )
        if name in _RANGES and not _RANGES[name][0] <= value <= _RANGES[name][1]:
            low, high = _RANGES[name]
            raise InvalidInput(
                f"review_params.{name} must be between {low} and {high}.",
                details={f"review_params.{name}": value},
            )
        merged[name] = value
    return merged


def _skill_named(session: Session, name: str) -> Skill:
    skill = session.scalar(select(Skill).where(Skill.name == name))
    if skill is None:
        raise InvalidInput(f"Unknown skill {name!r}.", details={"skill": name})
    return skill


def create_project(
    session: Session, *, organisation_id: int, created_by_id: int, fields: Mapping[str, Any]
) -> Project:
    """A new project in `organisation_id` from validated API fields."""
    deadline: datetime = fields["deadline"]
    _check_deadline(deadline)
    policy = fields.get("review_policy", ReviewPolicy.MANUAL.value)
    project = Project(
        organisation_id=organisation_id,
        created_by_id=created_by_id,
        name=fields["name"],
        instructions=fields.get("instructions", ""),
        label_schema=validate_schema(fields["label_schema"]),
        skill_id=_skill_named(session, fields["skill"]).id,
        min_level=fields.get("min_level", 1),
        pay_per_label_minor=fields["pay_per_label_minor"],
        currency=fields["currency"],
        budget_minor=fields.get("budget_minor", 0),
        labels_per_item=fields.get("labels_per_item", 1),
        review_policy=policy,
        review_params=normalise_review_params(fields.get("review_params")),
        lease_seconds=fields.get("lease_seconds", 1800),
        deadline_at=deadline,
        status=fields.get("status", ProjectStatus.DRAFT.value),
        webhook_url=fields.get("webhook_url"),
    )
    if policy == ReviewPolicy.CONSENSUS and project.labels_per_item < 2:
        raise InvalidInput(
            "Consensus review needs labels_per_item of at least 2.", details={"labels_per_item": "at least 2"}
        )
    session.add(project)
    session.flush()  # generate project.id
    return project


def update_project(
    session: Session, *, project: Project, fields: Mapping[str, Any], fee_bps: int | None = None
) -> Project:
    """Apply validated changes to `project`. A new labels per item applies to its open items too
    (`marketplace.projects.redundancy`); fee_bps: the app's PLATFORM_FEE_BPS by default."""
    changes = dict(fields)
    new_status = changes.get("status", project.status)
    if new_status != project.status and new_status not in allowed_transitions(project.status):
        raise Conflict(
            f"The project is {project.status}: it cannot become {changes['status']}.", code="bad_transition"
        )
    if project.status == ProjectStatus.COMPLETED and changes:
        raise Conflict("A completed project cannot be changed.", code="project_completed")
    if "skill" in changes:
        project.skill_id = _skill_named(session, changes.pop("skill")).id
    if "label_schema" in changes:
        has_labels = session.scalar(select(Label.id).where(Label.project_id == project.id).limit(1))
        if has_labels is not None:
            raise Conflict("The label schema cannot change once labels exist.", code="schema_locked")
        project.label_schema = validate_schema(changes.pop("label_schema"))
    if "review_params" in changes:
        project.review_params = normalise_review_params(
            changes.pop("review_params"), base=project.review_params
        )
    if "deadline" in changes:
        _check_deadline(changes["deadline"])
        project.deadline_at = changes.pop("deadline")
    labels_per_item = changes.pop("labels_per_item", project.labels_per_item)
    for name, value in changes.items():
        setattr(project, name, value)
    if project.review_policy == ReviewPolicy.CONSENSUS and labels_per_item < 2:
        raise InvalidInput(
            "Consensus review needs labels_per_item of at least 2.", details={"labels_per_item": "at least 2"}
        )
    now = utcnow()
    if labels_per_item != project.labels_per_item:
        from marketplace.projects.redundancy import change_labels_per_item

        fee = fee_bps if fee_bps is not None else int(current_app.config["PLATFORM_FEE_BPS"])
        change_labels_per_item(session, project=project, to=labels_per_item, now=now, fee_bps=fee)
    project.updated_at = now
    session.flush()
    return project


def list_tasks(
    session: Session, *, project: Project, after: int = 0, limit: int = 100, status: str | None = None
) -> tuple[list[Task], int | None]:
    """A page of the project's tasks after id `after` (keyset), and the cursor of the next page."""
    stmt = select(Task).where(Task.project_id == project.id, Task.id > after)
    if status:
        stmt = stmt.where(Task.status == status)
    rows = list(session.scalars(stmt.order_by(Task.id).limit(limit + 1)))
    next_after = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_after


def iter_export_rows(session: Session, *, project: Project, page_size: int = 500) -> Iterator[dict[str, Any]]:
    """Each task that has accepted labels, with them, in task order, read a page at a time."""
    after = 0
    while True:
        tasks = list(
            session.scalars(
                select(Task)
                .where(Task.project_id == project.id, Task.id > after, Task.labels_accepted > 0)
                .order_by(Task.id)
                .limit(page_size)
            )
        )
        if not tasks:
            return
        labels: dict[int, list[Label]] = {}
        for label in session.scalars(
            select(Label)
            .where(Label.task_id.in_([t.id for t in tasks]), Label.review_state == ReviewState.ACCEPTED.value)
            .order_by(Label.task_id, Label.id)
        ):
            labels.setdefault(label.task_id, []).append(label)
        for task in tasks:
            accepted = labels.get(task.id, [])
            yield {
                "task_id": task.id,
                "external_id": task.external_id,
                "payload": task.payload,
                "status": task.status,
                "labels": [
                    {
                        "label_id": lbl.id,
                        "annotator_id": lbl.annotator_id,
                        "value": lbl.value,
                        "created_at": lbl.created_at.isoformat(),
                    }
                    for lbl in accepted
                ],
            }
        after = tasks[-1].id


def check_gold_answer(project: Project, answer: Any, *, field: str) -> Any:
    """A gold answer must be a valid label of the project's schema."""
    return validate_value(project.label_schema, answer, field=field)
