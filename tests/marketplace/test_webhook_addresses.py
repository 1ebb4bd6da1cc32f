"""Where webhooks may go: the URL must be http(s) when it is set, and at delivery a URL resolving to a private,
loopback, link-local or otherwise non-public address is refused before any connection (in production, unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS), retried with backoff like any failure and given up after MAX_ATTEMPTS.
Redirects are answers: never followed, so the signed body cannot be sent elsewhere."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.accounts.models import Organisation
from marketplace.db import unit_of_work, utcnow
from marketplace.events.delivery import (
    BACKOFF_BASE,
    MAX_ATTEMPTS,
    Outbound,
    Outcome,
    _private_host,
    deliver_due,
    http_post,
)
from marketplace.events.models import WebhookDelivery
from marketplace.events.services import record_event
from marketplace.projects.models import Project
from marketplace.projects.services import update_project
from tests import factories as f
from tests.marketplace.test_quality_support import (  # noqa: F401  (fast_password_hashing: an autouse fixture)
    fast_password_hashing,
    make_project,
)

PRIVATE = "the webhook URL resolves to a private address"
NOT_HTTP = "the webhook URL must be http or https"


class Endpoint:
    """A local receiver: records each POST and answers `status`, with `location` as its Location header."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.status = 200
        self.location: str | None = None
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests.append(self.path)
                self.send_response(endpoint.status)
                if endpoint.location is not None:
                    self.send_header("Location", endpoint.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815  (a followed 303 would GET: record that too)

            def log_message(self, *_args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


def _serve() -> Iterator[Endpoint]:
    endpoint = Endpoint()
    endpoint.thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    yield from _serve()


@pytest.fixture
def elsewhere() -> Iterator[Endpoint]:
    """A second receiver, where a redirect points."""
    yield from _serve()


def _manager(db_session: Session, project: Project) -> dict[str, str]:
    org = db_session.get_one(Organisation, project.organisation_id)
    headers = f.auth(f.token(db_session, f.member(db_session, org, "manager")))
    db_session.commit()
    return headers


def _deliveries(db_session: Session, project_id: int) -> list[WebhookDelivery]:
    db_session.expire_all()
    return list(
        db_session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.project_id == project_id)
            .order_by(WebhookDelivery.id)
        )
    )


def _one_event(db_session: Session, project: Project) -> None:
    db_session.expire_all()  # the URL as the app last committed it
    record_event(db_session, project_id=project.id, type="item.completed", data={"n": 1})
    db_session.commit()


def _outbound(url: str) -> Outbound:
    return Outbound(delivery_id=1, url=url, body=b"{}", headers={"Content-Type": "application/json"})


# --- when the URL is set ------------------------------------------------------------------------------------


NOT_HTTP_URLS = [
    "ftp://hooks.example.com/in",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "gopher://hooks.example.com/",
    "hooks.example.com/in",
    "/relative/hook",
]


@pytest.mark.parametrize("url", NOT_HTTP_URLS)
def test_a_webhook_url_that_is_not_http_or_https_is_refused_when_set(
    client, db_session: Session, url: str
) -> None:
    project = make_project(db_session, tasks=1, webhook_url="https://hooks.example.com/in")
    headers = _manager(db_session, project)

    refused = client.patch(f"/api/v1/projects/{project.id}", json={"webhook_url": url}, headers=headers)

    assert refused.status_code == 422
    assert "webhook_url" in refused.get_json()["error"]["details"]
    db_session.expire_all()
    assert db_session.get_one(Project, project.id).webhook_url == "https://hooks.example.com/in"
    projects = db_session.scalar(select(func.count()).select_from(Project))
    created = client.post("/api/v1/projects", json=f.project_body(webhook_url=url), headers=headers)
    assert created.status_code == 422
    assert "webhook_url" in created.get_json()["error"]["details"]
    assert db_session.scalar(select(func.count()).select_from(Project)) == projects


def test_a_webhook_url_is_set_shown_and_cleared(client, db_session: Session) -> None:
    project = make_project(db_session, tasks=1)
    headers = _manager(db_session, project)

    changed = client.patch(
        f"/api/v1/projects/{project.id}",
        json={"webhook_url": "https://hooks.example.com/lf"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["webhook_url"] == "https://hooks.example.com/lf"
    shown = client.get(f"/api/v1/projects/{project.id}/webhook", headers=headers).get_json()
    assert shown["url"] == "https://hooks.example.com/lf"
    _one_event(db_session, project)
    assert [d.url for d in _deliveries(db_session, project.id)] == ["https://hooks.example.com/lf"]

    cleared = client.patch(f"/api/v1/projects/{project.id}", json={"webhook_url": None}, headers=headers)
    assert cleared.status_code == 200
    assert cleared.get_json()["webhook_url"] is None
    _one_event(db_session, project)
    assert len(_deliveries(db_session, project.id)) == 1  # no URL, no delivery


# --- at delivery: the address guard -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",  # a DNS name resolving to a loopback address
        "127.1",
        "2130706433",  # 127.0.0.1 as one number
        "0x7f000001",
        "0.0.0.0",  # noqa: S104  (an address to refuse, not to bind)
    ],
)
def test_names_of_the_local_machine_are_refused_before_connecting(endpoint: Endpoint, host: str) -> None:
    url = f"http://{host}:{endpoint.port}/hook"

    assert http_post(_outbound(url), allow_private=False, timeout=5) == Outcome(None, PRIVATE)
    assert endpoint.requests == []
    # the same address is reachable: what stopped the POST is the guard
    assert http_post(_outbound(url), allow_private=True, timeout=5) == Outcome(200)
    assert endpoint.requests == ["/hook"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.10:8080/hook",
        "https://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://100.64.0.1/hook",  # carrier-grade NAT
        "http://192.0.2.1/hook",  # documentation range
        "http://[::1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",  # an IPv4 private address written as IPv6
        "HTTPS://LOCALHOST/hook",
        "http://user:secret@127.0.0.1/hook",
    ],
)
def test_non_public_addresses_are_refused(url: str) -> None:
    assert _private_host(url)
    assert http_post(_outbound(url), allow_private=False, timeout=5) == Outcome(None, PRIVATE)


@pytest.mark.parametrize(
    "url",
    ["https://8.8.8.8/hook", "http://[2606:4700:4700::1111]/hook", "https://no-such-host.invalid/hook"],
)
def test_public_and_unresolvable_addresses_pass_the_guard(url: str) -> None:
    # An unresolvable name is not refused: its POST fails on its own and is retried.
    assert not _private_host(url)


@pytest.mark.parametrize("allow_private", [True, False])
@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/hook", "gopher://hooks.example.com/"])
def test_only_http_and_https_are_posted_to(url: str, allow_private: bool) -> None:
    assert http_post(_outbound(url), allow_private=allow_private, timeout=5) == Outcome(None, NOT_HTTP)


@pytest.mark.parametrize(
    ("env_name", "allow", "delivered"),
    [
        ("production", None, False),
        ("production", True, True),
        ("development", None, True),
        ("development", False, False),
    ],
)
def test_the_delivery_job_refuses_private_addresses_in_production_unless_allowed(
    make_app: Any,
    app_config: dict[str, Any],
    db_session: Session,
    endpoint: Endpoint,
    env_name: str,
    allow: bool | None,
    delivered: bool,
) -> None:
    config = {**app_config, "ENV_NAME": env_name}
    if allow is not None:
        config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"] = allow
    app: Flask = make_app(config)
    client = app.test_client()
    project = make_project(db_session, tasks=1)
    # The URL is accepted when set: the address is checked when a delivery is sent (names may change).
    changed = client.patch(
        f"/api/v1/projects/{project.id}",
        json={"webhook_url": endpoint.url},
        headers=_manager(db_session, project),
    )
    assert changed.status_code == 200, changed.get_json()
    _one_event(db_session, project)
    before = utcnow()

    result = app.test_cli_runner().invoke(args=["events", "deliver"])

    assert result.exit_code == 0, result.output
    (delivery,) = _deliveries(db_session, project.id)
    if delivered:
        assert "1 attempted: 1 delivered, 0 to retry, 0 failed" in result.output
        assert endpoint.requests == ["/hook"]
        assert (delivery.state, delivery.last_status, delivery.last_error) == ("delivered", 200, None)
        return
    assert "1 attempted: 0 delivered, 1 to retry, 0 failed" in result.output
    assert endpoint.requests == []
    assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
        "pending",
        1,
        None,
        PRIVATE,
    )
    assert before + BACKOFF_BASE <= delivery.next_attempt_at <= utcnow() + BACKOFF_BASE


def test_a_refused_address_is_retried_with_backoff_then_given_up(
    app: Flask, db_session: Session, endpoint: Endpoint
) -> None:
    project = make_project(db_session, tasks=1, webhook_url=endpoint.url)
    _one_event(db_session, project)
    clock = {"now": utcnow()}

    def deliver() -> Any:
        return deliver_due(
            lambda: unit_of_work(app),
            now=lambda: clock["now"],
            post=lambda request: http_post(request, allow_private=False, timeout=5),
        )

    for attempt in range(1, MAX_ATTEMPTS + 1):
        report = deliver()
        assert report.attempted == 1
        (delivery,) = _deliveries(db_session, project.id)
        assert (delivery.attempts, delivery.last_error) == (attempt, PRIVATE)
        if attempt < MAX_ATTEMPTS:
            assert (report.retrying, delivery.state) == (1, "pending")
            assert deliver().attempted == 0  # not due again before its backoff
        clock["now"] += timedelta(hours=7)
    assert (report.failed, delivery.state) == (1, "failed")
    assert deliver().attempted == 0
    assert endpoint.requests == []


def test_a_url_stored_without_the_api_check_is_refused_at_delivery(
    app: Flask, db_session: Session, endpoint: Endpoint
) -> None:
    project = make_project(db_session, tasks=1)
    update_project(db_session, project=project, fields={"webhook_url": "file:///etc/passwd"})
    db_session.commit()
    _one_event(db_session, project)

    result = app.test_cli_runner().invoke(args=["events", "deliver"])  # development: private allowed

    assert "1 attempted: 0 delivered, 1 to retry, 0 failed" in result.output
    (delivery,) = _deliveries(db_session, project.id)
    assert (delivery.state, delivery.last_status, delivery.last_error) == ("pending", None, NOT_HTTP)


# --- redirects ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed(
    make_app: Any,
    app_config: dict[str, Any],
    db_session: Session,
    endpoint: Endpoint,
    elsewhere: Endpoint,
    status: int,
) -> None:
    # Both receivers are on 127.0.0.1: the documented allowance for private networks lets them be reached.
    app: Flask = make_app({**app_config, "WEBHOOK_ALLOW_PRIVATE_NETWORKS": True})
    endpoint.status, endpoint.location = status, elsewhere.url
    project = make_project(db_session, tasks=1, webhook_url=endpoint.url)
    _one_event(db_session, project)

    result = app.test_cli_runner().invoke(args=["events", "deliver"])

    assert "1 attempted: 0 delivered, 1 to retry, 0 failed" in result.output
    assert endpoint.requests == ["/hook"]
    assert elsewhere.requests == []  # the signed body went nowhere else
    (delivery,) = _deliveries(db_session, project.id)
    assert (delivery.state, delivery.last_status, delivery.last_error) == (
        "pending",
        status,
        f"HTTP {status}",
    )
