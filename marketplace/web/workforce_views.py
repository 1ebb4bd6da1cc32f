"""A project's annotators page: what each did in the project, how well, how fast and at what cost, and blocks.

The numbers are those of `GET /api/v1/projects/<id>/workers` (`project_workforce`), a page of annotators at a
time; the block and unblock buttons call the same services as the API (`block_annotator`, `unblock_annotator`).
Admins, managers and finance read the page, as they read the budget; admins and managers block and unblock,
and open an annotator's rejected labels to reverse some (`reverse_rejections`, as the API's
`POST /api/v1/projects/<id>/rejections/reverse`).
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import flash, redirect, render_template, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_user, is_platform_admin, organisation_role, project_for
from marketplace.accounts.models import User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.billing.services import project_budget
from marketplace.db import get_session, retry_transaction, utcnow
from marketplace.errors import InvalidInput, NotFound
from marketplace.quality.appeals import MAX_REVERSALS, reverse_rejections
from marketplace.quality.review import project_labels
from marketplace.quality.workers import block_annotator, unblock_annotator
from marketplace.throughput.workforce import WorkerPerformance, project_workforce
from marketplace.web.access import (
    BUDGET_READERS,
    PROJECT_MANAGERS,
    PROJECTS,
    area_required,
    reload_user_on_retry,
)
from marketplace.web.blueprint import bp, csv_response, id_arg, parse_id
from marketplace.web.formatting import format_count
from marketplace.web.forms import ActionForm, BlockWorkerForm, ReverseRejectionsForm
from marketplace.work.models import ReviewState
from payments.errors import InsufficientFunds
from payments.money import Money

#: annotators per page, and per read of the CSV
PAGE = 50
CSV_PAGE = 200


@bp.get("/projects/<int:project_id>/workers")
@area_required(PROJECTS)
def project_workers(project_id: int) -> str:
    """The project's annotators by id, a page at a time, with their numbers and standing."""
    session = get_session()
    found = project_for(session, project_id, *BUDGET_READERS)
    user = current_user()
    after = id_arg("after") or 0
    page = project_workforce(session, project=found, after=after, limit=PAGE)
    can_manage = (
        is_platform_admin(user) or organisation_role(session, user, found.organisation_id) in PROJECT_MANAGERS
    )
    return render_template(
        "web/projects/workers.html",
        project=found,
        workers=page,
        next_after=page[-1].annotator_id if len(page) == PAGE else None,
        first_page=after == 0,
        can_manage=can_manage,
        block_form=BlockWorkerForm(),
        action_form=ActionForm(),
    )


#: the columns of workers.csv: counts, seconds and money as numbers (amounts in minor units) beside their display
WORKERS_CSV_COLUMNS = [
    "annotator_id",
    "name",
    "status",
    "blocked_reason",
    "fast_answers",
    "leases",
    "leases_released",
    "leases_expired",
    "labels_submitted",
    "labels_accepted",
    "labels_rejected",
    "labels_pending",
    "acceptance_rate",
    "gold_answered",
    "gold_correct",
    "time_on_task_seconds",
    "seconds_per_label",
    "labels_per_hour",
    "currency",
    "earned_minor",
    "earned",
    "bonuses_minor",
    "bonuses",
    "cost_minor",
    "cost",
    "cost_per_accepted_label",
    "hourly_pay",
    "last_label_at",
]


def _worker_row(w: WorkerPerformance) -> list[str]:
    def number(value: float | None, places: int) -> str:
        return "" if value is None else f"{value:.{places}f}"

    def shown(value: Money | None) -> str:
        return "" if value is None else value.format()

    return [
        str(w.annotator_id),
        w.name,
        "blocked" if w.blocked_at else "active",
        w.blocked_reason or "",
        str(w.fast_answers),
        str(w.leased),
        str(w.leases["released"]),
        str(w.leases["expired"]),
        str(w.submitted),
        str(w.labels["accepted"]),
        str(w.labels["rejected"]),
        str(w.labels["pending"]),
        number(w.acceptance_rate, 4),
        str(w.gold_answered),
        str(w.gold_correct),
        number(w.active_ms / 1000, 1),
        number(w.seconds_per_label, 1),
        number(w.labels_per_hour, 1),
        w.currency,
        str(w.earned_minor),
        Money(w.earned_minor, w.currency).format(),
        str(w.bonuses_minor),
        Money(w.bonuses_minor, w.currency).format(),
        str(w.cost_minor),
        Money(w.cost_minor, w.currency).format(),
        shown(w.cost_per_accepted_label),
        shown(w.hourly_pay),
        w.last_label_at.isoformat() if w.last_label_at else "",
    ]


@bp.get("/projects/<int:project_id>/workers.csv")
@area_required(PROJECTS)
def project_workers_csv(project_id: int) -> Response:
    """Every annotator of the project with their numbers, as CSV (read a page at a time, then sent)."""
    session = get_session()
    found = project_for(session, project_id, *BUDGET_READERS)
    everyone: list[WorkerPerformance] = []
    while True:
        after = everyone[-1].annotator_id if everyone else 0
        page = project_workforce(session, project=found, after=after, limit=CSV_PAGE)
        everyone.extend(page)
        if len(page) < CSV_PAGE:
            break

    def rows() -> Iterator[list[str]]:
        yield WORKERS_CSV_COLUMNS
        for worker in everyone:
            yield _worker_row(worker)

    return csv_response(f"project-{found.id}-annotators.csv", rows())


def _back(project_id: int) -> Response:
    after = id_arg("after")
    return redirect(
        url_for("web.project_workers", project_id=project_id, **({"after": after} if after else {}))
    )


@bp.post("/projects/<int:project_id>/workers/<int:annotator_id>/block")
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def block_project_worker(project_id: int, annotator_id: int) -> Response:
    """Block an annotator from the project with a reason; their live leases in it go back to the pool."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS)
    form = BlockWorkerForm()
    if not form.validate_on_submit():
        errors = [str(e) for errors in form.errors.values() for e in errors]
        flash(f"Nobody was blocked: {' '.join(errors)}", "error")
        return _back(found.id)
    try:
        standing = block_annotator(
            session,
            project=found,
            annotator_id=annotator_id,
            reason=form.reason.data or "",
            by_user_id=current_user().id,
            now=utcnow(),
        )
    except InvalidInput as exc:
        flash(f"Nobody was blocked: {exc.message}", "error")
        return _back(found.id)
    name = session.get_one(AnnotatorProfile, annotator_id).display_name
    if standing.changed:
        flash(f"Blocked {name} from this project; their live tasks in it went back to the pool.", "success")
    else:
        flash(f"{name} was already blocked: the block they have is kept.", "info")
    return _back(found.id)


@bp.post("/projects/<int:project_id>/workers/<int:annotator_id>/unblock")
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def unblock_project_worker(project_id: int, annotator_id: int) -> Response:
    """Lift an annotator's block in the project, with a fresh start for the automatic rules."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS)
    if not ActionForm().validate_on_submit():
        flash("The form expired; please try again.", "error")
        return _back(found.id)
    standing = unblock_annotator(
        session, project=found, annotator_id=annotator_id, by_user_id=current_user().id, now=utcnow()
    )
    name = session.get_one(AnnotatorProfile, annotator_id).display_name
    if standing.changed:
        flash(
            f"{name} can work on this project again; their gold and fast-answer counts start afresh.",
            "success",
        )
    else:
        flash(f"{name} was not blocked.", "info")
    return _back(found.id)


#: the rejected labels the page lists (the API pages through all of them)
REJECTIONS_SHOWN = 200


@bp.route("/projects/<int:project_id>/workers/<int:annotator_id>/rejections", methods=["GET", "POST"])
@area_required(PROJECTS)
@retry_transaction
@reload_user_on_retry
def worker_rejections(project_id: int, annotator_id: int) -> Response | tuple[str, int]:
    """An annotator's rejected labels in the project, oldest first, with the reason and who rejected them; the
    project's managers tick some and reverse them with a reason (`reverse_rejections`)."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS)
    worker = project_workforce(session, project=found, annotator_id=annotator_id)
    if not worker:
        raise NotFound(f"Annotator {annotator_id} has not worked on project {found.id}.")
    form = ReverseRejectionsForm()
    status = 200
    if form.validate_on_submit():
        ids = [parsed for parsed in (parse_id(value) for value in form.label_ids.data or []) if parsed]
        if not ids:
            form.label_ids.errors = [*form.label_ids.errors, "Tick the labels to reverse."]
            status = 422
        else:
            try:
                with session.begin_nested():  # a refusal half-way leaves nothing of the reversal
                    outcomes = reverse_rejections(
                        session,
                        project=found,
                        label_ids=ids[:MAX_REVERSALS],
                        user=current_user(),
                        reason=form.reason.data or "",
                        now=utcnow(),
                    )
            except InvalidInput as exc:
                form.reason.errors = [*form.reason.errors, exc.message]
                status = 422
            except InsufficientFunds:
                available = project_budget(session, project=found).available
                form.form_errors.append(
                    f"The budget has {available.format()} available: not enough to pay these labels. "
                    "Fund the budget or reverse fewer; nothing was reversed."
                )
                status = 409
            else:
                done = sum(1 for outcome in outcomes.values() if outcome == "reversed")
                flash(
                    f"Reversed {format_count(done, 'rejection')}: accepted and paid."
                    if done
                    else "Nothing to reverse: those labels are no longer rejected.",
                    "success" if done else "info",
                )
                return redirect(
                    url_for("web.worker_rejections", project_id=found.id, annotator_id=annotator_id)
                )
    elif form.is_submitted():
        status = 422
    labels = project_labels(
        session,
        project_id=found.id,
        review_state=ReviewState.REJECTED.value,
        annotator_id=annotator_id,
        limit=REJECTIONS_SHOWN,
    )
    reviewers = {label.reviewed_by_id for label in labels if label.reviewed_by_id is not None}
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(reviewers))).all())
    rows = [(label, names.get(label.reviewed_by_id)) for label in labels]
    return (
        render_template(
            "web/projects/rejections.html",
            project=found,
            worker=worker[0],
            rows=rows,
            form=form,
            shown=REJECTIONS_SHOWN,
        ),
        status,
    )
