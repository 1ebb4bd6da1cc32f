"""The `web` blueprint: the server-rendered UI. CSRF stays on for it (see marketplace.app)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from flask import Blueprint, Response, request, stream_with_context

from marketplace.limits import MAX_ID

bp = Blueprint("web", __name__)


def parse_id(value: str | None) -> int | None:
    """`value` as a row's id, or None when it could be no row's id: absent, not ASCII digits ("²" is a digit to
    `str.isdigit`, not to `int`), zero, or past the database's integer column."""
    if not value or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_ID else None


def id_arg(name: str) -> int | None:
    """An id from the query string (a filter, a page's cursor), or None when it is absent or could be no row's id:
    the page then shows what it shows without it."""
    return parse_id(request.args.get(name))


#: Pages load nothing from elsewhere but the items' own images; no inline script or style is needed.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' https: http: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


#: where a payout gateway's onboarding lives: the onboarding form's POST answers with a redirect there, and
#: browsers hold such redirects to the page's form-action
ONBOARDING_ORIGINS = {"stripe": "https://connect.stripe.com"}


def content_security_policy(*, form_redirect_to: str | None = None) -> str:
    """The pages' policy; `form_redirect_to` also lets this page's forms lead to that origin."""
    if form_redirect_to is None:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'", f"form-action 'self' {form_redirect_to}")


@bp.after_request
def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        # pages show who is logged in and what they earn: never from a shared cache or the back button of
        # someone who logged out
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def csv_response(name: str, rows: Iterator[list[str]]) -> Response:
    """A CSV download written row by row as it is sent."""

    def body() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        for row in rows:
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    response = Response(stream_with_context(body()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
