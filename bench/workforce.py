"""The workforce report: how long a page of `GET /api/v1/projects/{id}/workers` takes, by project size.

    .venv/bin/python bench/workforce.py [--pg URL] [--shapes 200x100000,2000x1000000,200x1000000] [--repeat 15]

Each shape is annotators × labels: a project whose labels are spread evenly over that many annotators (80%
accepted and paid, 10% rejected, 10% pending), in a database of its own. Rows are written with INSERT ... SELECT
(the assignments, labels, project-worker counters and the label payments' posted ledger transactions with their
three entries), not through the work loop, which would take hours at a million labels; balance rows are not
maintained, and the report does not read them. Then the app's own endpoint is timed in-process for the first
page (50 annotators, the API's default), a page from the middle and one annotator. Progress goes to stderr,
the Markdown table to stdout. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bench.next_task import BENCH_PASSWORD, bench_app, percentile, say, settle
from marketplace.accounts import services as accounts
from marketplace.annotators import services as annotators
from marketplace.billing.services import FEES_ACCOUNT, fund_project, payable_account_spec
from marketplace.db import unit_of_work, utcnow
from marketplace.projects.services import create_project
from payments import ledger
from payments.money import Money

PRICE, FEE = 50, 10


def fill(app: Any, *, workers: int, labels: int) -> tuple[int, str, list[int]]:
    """The project, a manager's token and the annotators' ids."""
    with unit_of_work(app) as session:
        org = accounts.create_organisation(session, name="Bench", slug="bench")
        manager = accounts.create_user(session, email="m@bench.test", name="M", password=BENCH_PASSWORD)
        accounts.add_membership(session, user=manager, organisation=org, role="manager")
        token = accounts.issue_token(session, user=manager, name="bench")[1]
        annotators.create_skill(session, name="bench")
        project = create_project(
            session,
            organisation_id=org.id,
            created_by_id=manager.id,
            fields={
                "name": "Workforce",
                "label_schema": {"type": "single_choice", "choices": ["a", "b"]},
                "skill": "bench",
                "pay_per_label_minor": PRICE,
                "currency": "EUR",
                "labels_per_item": 1,
                "review_policy": "manual",
                "deadline": utcnow().replace(year=utcnow().year + 1),
                "status": "active",
            },
        )
        fund_project(session, project=project, amount=Money(10**12, "EUR"), idempotency_key="bench")
        params = {"p": project.id, "n": labels, "w": workers, "price": PRICE, "fee": FEE}
        say(f"{workers:,} annotators")
        session.execute(
            text(
                "INSERT INTO users (email, name, password_hash, is_active, created_at)"
                " SELECT 'a' || g || '@bench.test', 'A' || g, 'x', true, now() FROM generate_series(1, :w) g"
            ),
            params,
        )
        session.execute(
            text(
                "INSERT INTO annotator_profiles (user_id, display_name, price_minor, currency, capacity, status,"
                " labels_per_hour, created_at) SELECT id, name, :price, 'EUR', 5, 'active', 60, now() FROM users"
                " WHERE email LIKE 'a%@bench.test'"
            ),
            params,
        )
        ids = list(session.scalars(text("SELECT id FROM annotator_profiles ORDER BY id")))
        say(f"{labels:,} items, assignments and labels")
        session.execute(
            text(
                "INSERT INTO tasks (project_id, external_id, payload, priority, is_gold, status, labels_needed,"
                " labels_accepted, labels_in_progress, created_at) SELECT :p, 'item-' || g, '{}'::jsonb, 0, false,"
                " 'complete', 1, 1, 0, now() FROM generate_series(1, :n) g"
            ),
            params,
        )
        session.execute(
            text(
                "INSERT INTO assignments (task_id, project_id, annotator_id, state, price_minor, fee_minor, currency,"
                " source, is_gold, leased_at, lease_expires_at, lease_cap_at, submitted_at, ended_at)"
                " SELECT t.id, :p, a.id, 'submitted', :price, :fee, 'EUR', 'plan', false,"
                " now() - interval '1 hour', now(), now(), now() - interval '59 minutes', now() - interval '59 minutes'"
                " FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM tasks WHERE project_id = :p) t"
                " JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM annotator_profiles) a"
                " ON a.k = t.n % :w"
            ),
            params,
        )
        session.execute(
            text(
                "INSERT INTO labels (assignment_id, task_id, project_id, annotator_id, value, time_spent_ms, is_gold,"
                " review_state, created_at) SELECT id, task_id, project_id, annotator_id, '\"a\"'::jsonb,"
                " 20000 + (id % 40000), false, CASE WHEN id / :w % 10 = 0 THEN 'rejected' WHEN id / :w % 10 = 1"
                " THEN 'pending' ELSE 'accepted' END, submitted_at FROM assignments WHERE project_id = :p"
            ),
            params,
        )
        session.execute(
            text(
                "INSERT INTO project_workers (project_id, annotator_id, leased, gold_leased, gold_correct,"
                " gold_wrong) SELECT :p, annotator_id, count(*), 0, 0, 0 FROM assignments WHERE project_id = :p"
                " GROUP BY annotator_id"
            ),
            params,
        )
        say("label payments in the ledger")
        accounts_by_code = ledger.ensure_accounts(
            session,
            [payable_account_spec(i, "EUR") for i in ids]
            + [ledger.AccountSpec(code=FEES_ACCOUNT, currency="EUR", kind="revenue")],
        )
        account_ids = {code: account.id for (code, _), account in accounts_by_code.items()}
        budget_id = session.scalar(
            text("SELECT id FROM ledger_accounts WHERE code = :c"), {"c": f"project:{project.id}:budget"}
        )
        session.execute(
            text(
                "CREATE TEMP TABLE payable_of AS SELECT id AS annotator_id, 0 AS account_id FROM annotator_profiles"
            )
        )
        for annotator_id in ids:
            session.execute(
                text("UPDATE payable_of SET account_id = :a WHERE annotator_id = :i"),
                {"a": account_ids[f"annotator:{annotator_id}:payable"], "i": annotator_id},
            )
        session.execute(
            text(
                "INSERT INTO ledger_transactions (idempotency_key, kind, reference, status, content_hash, metadata,"
                " created_at) SELECT 'label:' || id || ':' || 'accept', 'label_payment', 'label:' || id, 'posted', 'bench',"
                " '{}'::jsonb, created_at FROM labels WHERE project_id = :p AND review_state = 'accepted'"
            ),
            params,
        )
        session.execute(
            text(
                "INSERT INTO ledger_entries (transaction_id, account_id, currency, direction, amount_minor)"
                " SELECT t.id, e.account_id, 'EUR', e.direction, e.amount FROM ledger_transactions t"
                " JOIN labels l ON t.reference = 'label:' || l.id JOIN payable_of p ON p.annotator_id = l.annotator_id"
                " CROSS JOIN LATERAL (VALUES (:budget, 'debit', :price + :fee), (p.account_id, 'credit', :price),"
                " (:fees, 'credit', :fee)) AS e(account_id, direction, amount) WHERE t.kind = 'label_payment'"
            ),
            {**params, "budget": budget_id, "fees": account_ids[FEES_ACCOUNT]},
        )
        return project.id, token, ids


def timed(client: Any, url: str, headers: dict[str, str], repeat: int) -> tuple[float, float, dict[str, Any]]:
    samples = []
    body: dict[str, Any] = {}
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
        body = response.get_json()
    return statistics.median(samples), percentile(samples, 0.95), body


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--shapes", default="200x100000,2000x1000000,200x1000000")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    rows = []
    for shape in args.shapes.split(","):
        workers, labels = (int(part) for part in shape.split("x"))
        with bench_app(args.pg, args.redis) as (app, _url, _prefix):
            project_id, token, ids = fill(app, workers=workers, labels=labels)
            settle(app)
            client = app.test_client()
            headers = {"Authorization": f"Bearer {token}"}
            base = f"/api/v1/projects/{project_id}/workers"
            first = timed(client, f"{base}?limit=50", headers, args.repeat)
            middle = timed(client, f"{base}?limit=50&after={ids[len(ids) // 2]}", headers, args.repeat)
            one = timed(client, f"{base}/{ids[0]}", headers, args.repeat)
            check = first[2]["items"][0]
            say(
                f"{shape}: first page {first[0]:.0f} ms; first annotator {check['labels']}, earned {check['earned']}"
            )
            rows.append((workers, labels, labels // workers, first, middle, one))
    print(
        "| annotators | labels | labels per annotator | first page of 50, p50 / p95 | a middle page | one annotator |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for workers, labels, each, first, middle, one in rows:
        print(
            f"| {workers:,} | {labels:,} | {each:,} | {first[0]:.0f} / {first[1]:.0f} ms"
            f" | {middle[0]:.0f} / {middle[1]:.0f} ms | {one[0]:.1f} / {one[1]:.1f} ms |"
        )


if __name__ == "__main__":
    main()
