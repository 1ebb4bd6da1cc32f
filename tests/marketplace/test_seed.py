from __future__ import annotations

from sqlalchemy import func, select

from marketplace.accounts.models import Organisation, User
from marketplace.annotators.models import AnnotatorProfile
from marketplace.projects.models import Project, Task


def _counts(db_session) -> tuple[int, ...]:
    return tuple(
        db_session.scalar(select(func.count()).select_from(model))
        for model in (Organisation, User, AnnotatorProfile, Project, Task)
    )


def test_seed_demo_twice_creates_the_demo_once_and_it_can_be_planned_and_worked(
    runner, client, db_session
) -> None:
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    assert "demo created" in first.output
    counts = _counts(db_session)
    assert counts == (1, 25, 20, 2, 320)
    second = runner.invoke(args=["seed-demo"])
    assert "nothing duplicated" in second.output
    assert _counts(db_session) == counts
    token = next(
        line.split("token ")[1]
        for line in second.output.splitlines()
        if "ana@annotators.test" in line and "token" in line
    )
    planned = runner.invoke(args=["routing", "plan"])
    assert planned.exit_code == 0, planned.output
    work = client.post("/api/v1/work/next", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert work["assignment"] is not None, work
    manager_token = next(
        line.split("token ")[1] for line in second.output.splitlines() if "manager@acme.test" in line
    )
    budget = client.get(
        f"/api/v1/projects/{work['assignment']['project_id']}/budget",
        headers={"Authorization": f"Bearer {manager_token}"},
    )
    assert budget.status_code == 200
    assert budget.get_json()["funded"]["amount_minor"] > 0
