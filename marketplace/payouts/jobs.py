"""Background jobs of payouts: plain functions taking ids, run by an RQ worker (or called directly).

Each opens its own sessions through `unit_of_work`; in a worker process with no app, one is built from the
environment on first use.
"""

from __future__ import annotations

from marketplace.payouts import services
from payments import payout_runs, webhooks


def process_stripe_event(event_id: str) -> str:
    """Process one stored Stripe event; returns its status (or the error, and it stays pending)."""
    with services.app_context_for_jobs() as app:
        return webhooks.process_one_event(
            services.session_scope(app), event_id=event_id, gateway=services.get_gateway(app)
        )


def process_pending_events() -> dict[str, int]:
    """Process webhook events still pending (a lost job, a failed attempt); returns counts."""
    with services.app_context_for_jobs() as app:
        report = webhooks.process_pending_events(
            services.session_scope(app), gateway=services.get_gateway(app)
        )
        return {
            "processed": len(report.processed),
            "ignored": len(report.ignored),
            "failed": len(report.failed),
        }


def execute_payout_run(run_id: int) -> list[int]:
    """Execute a payout run recorded by the API; returns the ids of the payouts it requested."""
    with services.app_context_for_jobs() as app:
        report = payout_runs.run_payouts(
            services.session_scope(app),
            gateway=services.get_gateway(app),
            throttle=services.get_throttle(app),
            worker=services.worker_name(),
            run_id=run_id,
        )
        return report.requested


def submit_due_payouts() -> list[int]:
    """Submit every due payout (new ones and retries); returns the ids settled."""
    with services.app_context_for_jobs() as app:
        report = payout_runs.submit_due_payouts(
            services.session_scope(app),
            gateway=services.get_gateway(app),
            throttle=services.get_throttle(app),
            worker=services.worker_name(),
        )
        return report.settled


def resolve_stale_payouts() -> dict[str, int]:
    """Look up stale payouts and book missing balance transactions; returns counts."""
    with services.app_context_for_jobs() as app:
        report = payout_runs.resolve_stale_payouts(
            services.session_scope(app), gateway=services.get_gateway(app), worker=services.worker_name()
        )
        return {
            "marked_stale": report.marked_stale,
            "settled": len(report.settled),
            "failed": len(report.failed),
            "still_open": len(report.still_open),
        }
