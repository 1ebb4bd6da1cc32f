"""Domain errors and the one handler that turns every error into a JSON problem (API) or an HTML page (web).

Problem body: ``{"error": {"code": "...", "message": "...", "details": ...}}`` with the right 4xx status.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from payments.ledger import is_retryable

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A refusal the caller can understand and act on."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class InvalidInput(DomainError):
    status = 422
    code = "invalid_input"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Unauthorized(DomainError):
    status = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Gone(DomainError):
    status = 410
    code = "gone"


def wants_json() -> bool:
    """API paths and clients that ask for JSON get problem bodies; browsers get pages."""
    if request.path.startswith(("/api/", "/webhooks/", "/healthz")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def problem(status: int, code: str, message: str, details: Any = None) -> Response:
    """A JSON problem response."""
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


def _render(status: int, code: str, message: str, details: Any = None) -> Response:
    if wants_json():
        return problem(status, code, message, details)
    html = render_template("error.html", status=status, code=code, message=message)
    return Response(html, status=status, mimetype="text/html")


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def handle_http_exception(exc: HTTPException) -> Response:
    """Werkzeug and flask-smorest errors (404, 405, 413, webargs' 422) as problems."""
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    details = data.get("messages") if isinstance(data, dict) else None
    message = exc.description or exc.name
    if status == 422 and details:
        message = "The request body or parameters are invalid."
        details = _flatten_locations(details)
    if status == 400 and isinstance(data, dict) and data.get("messages"):
        message = "The request could not be parsed."
    response = _render(status, _http_code(exc) if status != 422 else "invalid_input", message, details)
    for name, value in exc.get_headers():
        if name.lower() == "allow":  # a 405 tells the client which methods the resource has
            response.headers["Allow"] = value
    return response


def _flatten_locations(messages: Any) -> Any:
    # webargs nests errors by location ({"json": {...}}); one location is the common case and reads better flat.
    if isinstance(messages, dict) and len(messages) == 1:
        ((location, inner),) = messages.items()
        if location in {"json", "query", "form", "files", "headers", "view_args"}:
            return inner
    return messages


def handle_domain_error(exc: DomainError) -> Response:
    return _render(exc.status, exc.code, exc.message, exc.details)


def _discard_failed_work() -> None:
    """Roll back the request's unit of work after the database refused a statement, so that rendering the answer
    (a page's navigation reads the signed-in user) runs on a usable session."""
    session = g.get("db_session")
    if session is not None:
        session.rollback()


def handle_integrity_error(exc: IntegrityError) -> Response:
    # A constraint the services did not foresee is a conflict with current state, not a server fault.
    log.warning("integrity error reached the edge: %s", exc.orig)
    _discard_failed_work()
    return _render(409, "conflict", "The change conflicts with the current state; retry or reload.")


def handle_data_error(exc: DataError) -> Response:
    # A value the database refused (out of range, not representable): the schemas bound what clients send, so
    # this is a bound they missed, and still the client's input rather than a server fault.
    log.warning("data error reached the edge: %s", exc.orig)
    _discard_failed_work()
    return _render(422, "invalid_input", "A value is out of range or cannot be stored.")


def concurrent_update_response() -> Response:
    """The database undid this request's transaction for a concurrent one (a deadlock victim, a serialization
    failure, a busy SQLite file): nothing was written, and the same request again will most likely pass."""
    response = _render(
        503,
        "concurrent_update",
        "A concurrent request changed the same rows and this one was undone; nothing was saved. Send it again.",
    )
    response.headers["Retry-After"] = "1"
    return response


def handle_unexpected(exc: Exception) -> Response:
    if isinstance(exc, DBAPIError) and is_retryable(exc):
        log.warning("transaction undone for a concurrent one: %s", exc.orig)
        _discard_failed_work()
        return concurrent_update_response()
    if isinstance(exc, OperationalError):
        log.exception("database unavailable")
        return _render(503, "unavailable", "The database is unavailable; retry shortly.")
    log.exception("unhandled error")
    return _render(500, "internal_error", InternalServerError.description)


def init_app(app: Flask) -> None:
    """Register the handlers; payments' errors are mapped to statuses here, where HTTP is known."""
    from payments import errors as payments_errors

    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(IntegrityError, handle_integrity_error)
    app.register_error_handler(DataError, handle_data_error)

    statuses: dict[type[payments_errors.PaymentsError], int] = {
        payments_errors.InvalidAmount: 422,
        payments_errors.UnbalancedTransaction: 422,
        payments_errors.InsufficientFunds: 409,
        payments_errors.FundsTakenBeforeCommit: 409,
        payments_errors.IdempotencyConflict: 409,
        payments_errors.HoldAlreadyResolved: 409,
        payments_errors.AccountNotFound: 404,
        payments_errors.HoldNotFound: 409,
        payments_errors.AccountConflict: 409,
        payments_errors.PayoutError: 409,
        payments_errors.GatewayError: 502,
        payments_errors.WebhookSignatureError: 400,
    }

    def handle_payments_error(exc: payments_errors.PaymentsError) -> Response:
        status = next((statuses[c] for c in type(exc).__mro__ if c in statuses), 400)
        return _render(status, exc.code, str(exc), exc.details)

    app.register_error_handler(payments_errors.PaymentsError, handle_payments_error)
    app.register_error_handler(Exception, handle_unexpected)
