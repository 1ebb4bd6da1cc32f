"""The manager's pages: projects of my organisations, a project's dashboard, task import."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app, flash, redirect, render_template, url_for
from sqlalchemy import and_, func, select
from werkzeug.wrappers import Response

from marketplace.accounts.auth import current_user, is_platform_admin, organisation_role, project_for
from marketplace.accounts.models import Membership, Organisation
from marketplace.billing.services import BUDGET_FIELDS, BudgetSummary
from marketplace.db import get_session, utcnow
from marketplace.errors import Conflict, InvalidInput
from marketplace.planning.models import Offer, PlanRun
from marketplace.projects import imports
from marketplace.projects.models import Project
from marketplace.redis import get_redis
from marketplace.throughput.models import ProjectHealth
from marketplace.throughput.services import RISK_MESSAGES, project_progress
from marketplace.web import queries
from marketplace.web.access import (
    BUDGET_READERS,
    PROJECT_MANAGERS,
    PROJECT_READERS,
    PROJECTS,
    area_required,
    managed_organisations,
)
from marketplace.web.blueprint import bp
from marketplace.web.charts import hourly_bar_chart
from marketplace.web.forms import IMPORT_FORMATS, ImportForm
from payments.money import Money

CHART_HOURS = 24


@bp.get("/projects")
@area_required(PROJECTS)
def projects() -> str:
    """Every project of my organisations with its progress (one grouped query for all of them)."""
    session = get_session()
    user = current_user()
    stmt = (
        select(Project, Organisation.name, ProjectHealth.at_risk)
        .join(Organisation, Organisation.id == Project.organisation_id)
        .outerjoin(ProjectHealth, ProjectHealth.project_id == Project.id)
        .order_by(Project.status != "active", Project.deadline_at, Project.id)
    )
    if not is_platform_admin(user):
        stmt = stmt.join(
            Membership,
            and_(
                Membership.organisation_id == Project.organisation_id,
                Membership.user_id == user.id,
                Membership.role.in_(PROJECT_READERS),
            ),
        )
    rows = session.execute(stmt).all()
    progress = queries.progress_by_project(session, [p.id for p, _, _ in rows])
    return render_template(
        "web/projects/list.html",
        rows=[
            (
                p,
                org,
                progress.get(p.id, queries.Progress()),
                Money(p.pay_per_label_minor, p.currency),
                bool(risk),
            )
            for p, org, risk in rows
        ],
        can_create=bool(managed_organisations(session, user)),
        now=utcnow(),
    )


def _role(project: Project) -> str | None:
    """The caller's role in the project's organisation (None for platform admins, who see everything)."""
    user = current_user()
    return (
        None if is_platform_admin(user) else organisation_role(get_session(), user, project.organisation_id)
    )


@bp.get("/projects/<int:project_id>")
@area_required(PROJECTS)
def project(project_id: int) -> str:
    """Progress, budget, pace and forecast, the latest plan and labels per hour over the last day."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_READERS)
    role = _role(found)
    now = utcnow()
    progress = project_progress(
        session,
        project=found,
        now=now,
        fee_bps=int(current_app.config["PLATFORM_FEE_BPS"]),
        seen_window=timedelta(seconds=int(current_app.config["ANNOTATOR_SEEN_WINDOW_SECONDS"])),
        client=get_redis(),
    )
    last_hour = next((w for w in progress.throughput if w.window.name == "1h"), None)
    counts = queries.labels_per_hour(session, project_id=found.id, now=now, hours=CHART_HOURS)
    first_hour = queries.hour_start(now) - timedelta(hours=CHART_HOURS - 1)
    plan = session.scalar(select(PlanRun).order_by(PlanRun.id.desc()).limit(1))
    queued = session.scalar(select(func.count()).select_from(Offer).where(Offer.project_id == found.id)) or 0
    return render_template(
        "web/projects/detail.html",
        project=found,
        progress=progress,
        open_slots=max(progress.labels_needed - progress.labels_accepted - progress.labels_in_progress, 0),
        pace_basis="the last hour" if last_hour is not None and last_hour.submitted else "the last 24 hours",
        risks=[(code, RISK_MESSAGES.get(code, code)) for code in progress.risks],
        budget=_budget(found, progress.budget),
        states=queries.label_states(session, found.id),
        leases=queries.live_leases(session, found.id),
        show_budget=role is None or role in BUDGET_READERS,
        can_manage=role is None or role in PROJECT_MANAGERS,
        pay=Money(found.pay_per_label_minor, found.currency),
        chart=hourly_bar_chart(counts, first_hour=first_hour),
        plan=plan,
        plan_cost=[Money(int(v), c) for c, v in sorted((plan.cost or {}).items())] if plan else [],
        queued=queued,
        now=now,
    )


def _budget(project: Project, data: dict[str, Any]) -> BudgetSummary:
    """The throughput service's budget (the API's JSON shape) as Money again, for Money.format()."""
    amounts = {
        name: Money(int(data[name]["amount_minor"]), str(data[name]["currency"])) for name in BUDGET_FIELDS
    }
    return BudgetSummary(project_id=project.id, currency=project.currency, **amounts)


@bp.route("/projects/<int:project_id>/import", methods=["GET", "POST"])
@area_required(PROJECTS)
def import_tasks(project_id: int) -> Response | tuple[str, int]:
    """Upload JSON, JSON Lines, CSV or TSV: all rows or none; bad rows are listed by line."""
    session = get_session()
    found = project_for(session, project_id, *PROJECT_MANAGERS)
    form = ImportForm()
    problem: dict[str, Any] | None = None
    status = 200
    if form.validate_on_submit():
        upload = form.file.data
        fmt = form.format.data if form.format.data != "auto" else _format_from_name(upload.filename or "")
        if fmt is None:
            form.format.errors = ["Choose the format: the file name does not say it."]
            status = 422
        else:
            try:
                result = imports.import_tasks(
                    session, project=found, rows=imports.read_rows(upload.stream, fmt)
                )
            except (InvalidInput, Conflict) as exc:
                problem = {"message": exc.message, "details": exc.details or {}}
                status = 422 if isinstance(exc, InvalidInput) else 409
            else:
                flash(
                    f"Imported {result.rows:,} rows: {result.created:,} new tasks, "
                    f"{result.existing:,} already there.",
                    "success",
                )
                return redirect(url_for("web.project", project_id=found.id))
    elif form.is_submitted():
        status = 422
    return (
        render_template(
            "web/projects/import.html", project=found, form=form, problem=problem, formats=IMPORT_FORMATS
        ),
        status,
    )


def _format_from_name(filename: str) -> str | None:
    suffix = filename.lower().rsplit(".", 1)[-1] if "." in filename else ""
    return {"json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv", "tsv": "tsv"}.get(suffix)
