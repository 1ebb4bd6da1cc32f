"""The pages in a real browser (Debian's chromium through Playwright), against a live server with CSRF on."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.billing.services import project_budget
from marketplace.db import utcnow
from marketplace.projects.models import Project
from marketplace.work import decisions, leasing
from marketplace.work.models import Assignment, ProjectWorker
from payments.money import Money
from tests import factories as f
from tests.web.conftest import World, add_tasks

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page(page: Page) -> Page:
    """The page, failing the test on any console error (a CSP violation, a 404 asset, a script error)."""
    page.set_default_timeout(10_000)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    assert errors == []


def log_in(page: Page, base: str, email: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(f.PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_annotator_gets_a_task_picks_a_choice_and_submits(
    world: World, live_server: str, browser_page: Page, tmp_path: Path
) -> None:
    page = browser_page
    log_in(page, live_server, world.annotator_user.email)
    expect(page).to_have_url(f"{live_server}/work")
    expect(page.get_by_text("€0.50", exact=False).first).to_be_visible()

    page.get_by_role("button", name="Get next task").click()
    expect(page.get_by_text("You earn €0.50 if accepted")).to_be_visible()
    expect(page.get_by_text("Review number 0: it works.")).to_be_visible()
    expect(page.get_by_text("Is the review positive, negative or neutral?")).to_be_visible()
    # the script runs (CSP allows it): the countdown ticks as m:ss
    expect(page.locator("[data-countdown]")).to_have_text(re.compile(r"^\d+:\d\d$"))
    page.keyboard.press("3")  # keyboard shortcut: the third choice
    expect(page.get_by_label("negative")).to_be_checked()
    page.get_by_text("positive", exact=True).click()
    expect(page.get_by_label("positive")).to_be_checked()
    page.screenshot(path=tmp_path / "annotator-task.png", full_page=True)

    page.get_by_role("button", name="Submit label").click()
    expect(page.get_by_text("Submitted. You earn €0.50 if it is accepted.")).to_be_visible()
    expect(page.get_by_role("heading", name="Label submitted")).to_be_visible()
    page.screenshot(path=tmp_path / "annotator-submitted.png", full_page=True)

    page.get_by_role("link", name="My work").click()
    row = page.get_by_role("row").filter(has_text="item-000")
    expect(row).to_contain_text("pending")
    expect(row).to_contain_text("positive")
    page.screenshot(path=tmp_path / "annotator-history.png", full_page=True)
    assert (tmp_path / "annotator-task.png").stat().st_size > 10_000


def test_more_time_extends_the_lease_without_a_reload(
    world: World, live_server: str, browser_page: Page
) -> None:
    page = browser_page
    log_in(page, live_server, world.annotator_user.email)
    page.get_by_role("button", name="Get next task").click()
    with page.expect_response(re.compile(r"/heartbeat$")) as response:
        page.get_by_role("button", name="More time").click()
    assert response.value.status == 200  # the script sent the CSRF token in its header
    expect(page.locator("[data-countdown]")).to_have_text(re.compile(r"^\d+:\d\d$"))


def _labels_over_the_last_hours(db_session: Session, world: World, per_hour: list[int]) -> int:
    """Labels submitted `per_hour[h]` times h hours ago (every other one accepted): a day with some history."""
    add_tasks(db_session, world.project, sum(per_hour) + 5)
    now = utcnow()
    made = 0
    for hours_ago, count in reversed(list(enumerate(per_hour))):  # oldest first: last seen recently
        for i in range(count):
            at = now - timedelta(hours=hours_ago, minutes=5 + 50 * i // max(count, 1))
            outcome = leasing.lease_next_assignment(
                db_session, annotator=world.annotator, now=at, fee_bps=2000
            )
            assert outcome.assignment is not None, outcome.reason
            label, _ = decisions.submit_label(
                db_session,
                annotator=world.annotator,
                assignment_id=outcome.assignment.id,
                value="positive",
                idempotency_key=None,
                now=at + timedelta(minutes=1),
            )
            if made % 2 == 0:
                decisions.accept_label(db_session, label=label, now=at + timedelta(minutes=2))
            made += 1
    db_session.commit()
    return made


def test_manager_sees_the_project_dashboard(
    world: World, live_server: str, browser_page: Page, tmp_path: Path, db_session: Session
) -> None:
    made = _labels_over_the_last_hours(db_session, world, [2, 4, 3, 6, 5, 8, 4, 7, 3, 5, 2, 1])
    page = browser_page
    log_in(page, live_server, world.manager.email)
    page.get_by_role("link", name="Projects").first.click()
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()
    page.get_by_role("link", name="Product reviews").click()
    expect(page.get_by_role("heading", name=re.compile("Product reviews"))).to_be_visible()
    expect(page.get_by_text("€1,000.00").first).to_be_visible()  # funded, formatted
    expect(page.get_by_text("Items complete")).to_be_visible()
    expect(page.locator("figure.chart svg")).to_be_visible()
    for heading in ("Progress", "Pace and forecast", "Budget", "Routing plan"):
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.locator("figure.chart figcaption")).to_contain_text(f"{made} in all")
    page.screenshot(path=tmp_path / "manager-dashboard.png", full_page=True)
    assert (tmp_path / "manager-dashboard.png").stat().st_size > 10_000


def test_manager_creates_and_funds_a_project_in_the_browser(
    world: World, live_server: str, browser_page: Page, tmp_path: Path, db_session: Session
) -> None:
    page = browser_page
    log_in(page, live_server, world.manager.email)
    page.get_by_role("link", name="Projects").first.click()
    page.get_by_role("link", name="New project").click()
    page.get_by_label("Name").fill("Street signs")
    page.get_by_label("Choices, one per line").fill("stop\nyield\nspeed limit")
    page.get_by_label("Pay per accepted label").fill("0.40")
    page.get_by_label("Deadline (UTC)").fill((utcnow() + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"))
    page.screenshot(path=tmp_path / "new-project.png", full_page=True)
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("heading", name=re.compile("Street signs"))).to_be_visible()

    page.get_by_role("link", name="Fund").click()
    page.get_by_label("Amount").fill("250.00")
    page.get_by_role("button", name="Add to the budget").click()
    expect(page.get_by_text("Added €250.00 to the budget")).to_be_visible()
    page.screenshot(path=tmp_path / "funded.png", full_page=True)

    project = db_session.scalars(select(Project).where(Project.name == "Street signs")).one()
    assert (project.pay_per_label_minor, project.currency) == (40, "EUR")
    assert project_budget(db_session, project=project).available == Money(25_000, "EUR")


def test_manager_pauses_a_project_from_its_settings_in_the_browser(
    world: World, live_server: str, browser_page: Page, tmp_path: Path, db_session: Session
) -> None:
    page = browser_page
    log_in(page, live_server, world.manager.email)
    page.goto(f"{live_server}/projects/{world.project.id}")
    expect(page.locator("h1 .state")).to_have_text("active")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name=re.compile("Settings"))).to_be_visible()
    expect(page.get_by_role("button", name="Resume")).to_have_count(0)
    page.screenshot(path=tmp_path / "settings.png", full_page=True)
    page.get_by_role("button", name="Pause").click()

    expect(page).to_have_url(f"{live_server}/projects/{world.project.id}")
    expect(page.get_by_text("Project paused: annotators get no new tasks from it.")).to_be_visible()
    expect(page.locator("h1 .state")).to_have_text("paused")
    page.screenshot(path=tmp_path / "paused.png", full_page=True)
    db_session.expire_all()
    assert db_session.get_one(Project, world.project.id).status == "paused"


def test_enter_submits_and_opens_the_next_item(world: World, live_server: str, browser_page: Page) -> None:
    page = browser_page
    log_in(page, live_server, world.annotator_user.email)
    page.get_by_role("button", name="Get next task").click()
    expect(page.get_by_text("Review number 0: it works.")).to_be_visible()
    first = page.url
    page.wait_for_load_state("domcontentloaded")  # the deferred script has run: its keys are listened to
    page.keyboard.press("1")
    expect(page.get_by_label("positive")).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Review number 1: it works.")).to_be_visible()
    expect(page.get_by_text("Submitted. You earn €0.50 if it is accepted.")).to_be_visible()
    assert page.url != first
    expect(page.get_by_role("button", name="Submit and next")).to_be_visible()


def test_manager_blocks_and_unblocks_an_annotator_in_the_browser(
    world: World, live_server: str, browser_page: Page, tmp_path: Path, db_session: Session
) -> None:
    outcome = leasing.lease_next_assignment(db_session, annotator=world.annotator, now=utcnow(), fee_bps=2000)
    assert outcome.assignment is not None
    db_session.commit()
    page = browser_page
    log_in(page, live_server, world.manager.email)
    page.goto(f"{live_server}/projects/{world.project.id}")
    page.get_by_role("link", name="Annotators").click()
    expect(page.get_by_role("heading", name="Annotators")).to_be_visible()
    page.get_by_text("Block…").click()
    page.get_by_label(f"Why block {world.annotator.display_name}").fill("Answers copied between items")
    page.get_by_role("button", name="Block", exact=True).click()
    expect(page.get_by_text(f"Blocked {world.annotator.display_name} from this project")).to_be_visible()
    expect(page.get_by_text("Answers copied between items")).to_be_visible()
    page.screenshot(path=tmp_path / "blocked.png", full_page=True)
    db_session.expire_all()
    standing = db_session.get_one(ProjectWorker, (world.project.id, world.annotator.id))
    assert standing.blocked_source == "manager"
    assert db_session.get_one(Assignment, outcome.assignment.id).state == "released"

    page.get_by_role("button", name="Unblock").click()
    expect(page.get_by_text("can work on this project again")).to_be_visible()
    db_session.expire_all()
    assert db_session.get_one(ProjectWorker, (world.project.id, world.annotator.id)).blocked_at is None
