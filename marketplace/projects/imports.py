"""Streaming task import: JSON arrays, JSON Lines and CSV/TSV, all or nothing, idempotent by external id.

Rows are validated one at a time and inserted in chunks with ``INSERT ... ON CONFLICT DO NOTHING``: an import of
100k rows never builds ORM objects, and a re-import of the same external ids creates nothing. One bad row rejects
the whole import (the transaction is rolled back) and every bad row is reported with its line number.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import insert, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from marketplace.client_json import find_unstorable_text, loads_client_json
from marketplace.db import utcnow
from marketplace.errors import Conflict, InvalidInput
from marketplace.projects.label_schema import validate_value
from marketplace.projects.models import Project, ProjectStatus, Task, TaskStatus
from payments.db import take_turns

FORMATS = ("json", "jsonl", "csv", "tsv")
MAX_REPORTED_ERRORS = 100
ROW_FIELDS = {"external_id", "id", "payload", "data", "priority", "gold_answer"}
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class ImportResult:
    rows: int
    created: int
    existing: int


class RowError(ValueError):
    """A row that cannot be imported, with the reason."""


def format_for_mimetype(mimetype: str) -> str | None:
    """The import format implied by a Content-Type, if any."""
    return {
        "application/json": "json",
        "application/x-ndjson": "jsonl",
        "application/jsonl": "jsonl",
        "application/x-jsonlines": "jsonl",
        "text/csv": "csv",
        "text/tab-separated-values": "tsv",
    }.get(mimetype)


def read_rows(stream: IO[bytes], fmt: str) -> Iterator[tuple[int, Any]]:
    """(line number, raw row) pairs; a row that cannot be parsed comes as a RowError in place of the row."""
    if fmt not in FORMATS:
        raise InvalidInput(f"Unknown import format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    try:
        if fmt == "json":
            yield from _json_rows(text)
        elif fmt == "jsonl":
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, loads_client_json(line)
                except json.JSONDecodeError as exc:
                    yield number, RowError(f"invalid JSON: {exc.msg}")
        else:
            reader = csv.DictReader(text, delimiter="\t" if fmt == "tsv" else ",", strict=True)
            try:
                for row in reader:
                    yield reader.line_num, _csv_row(row)
            except csv.Error as exc:
                yield reader.line_num, RowError(f"invalid {fmt.upper()}: {exc}")
    except UnicodeDecodeError as exc:
        raise InvalidInput("The body is not UTF-8 text.", details={"position": exc.start}) from exc
    finally:
        text.detach()


def _json_rows(text: IO[str]) -> Iterator[tuple[int, Any]]:
    try:
        data = loads_client_json(text.read())
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"The body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            details={"line": exc.lineno, "column": exc.colno},
        ) from exc
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise InvalidInput('A JSON import is an array of tasks (or {"tasks": [...]}).')
    # JSON arrays have no meaningful line numbers once parsed: rows are numbered from 1 in array order.
    yield from enumerate(data, start=1)


def _csv_row(row: dict[str | None, Any]) -> dict[str, Any] | RowError:
    if None in row:
        return RowError("more fields than the header has")
    payload = {
        k: v
        for k, v in row.items()
        if k is not None and k not in {"external_id", "id", "priority", "gold_answer"}
    }
    out: dict[str, Any] = {"external_id": row.get("external_id") or row.get("id"), "payload": payload}
    if row.get("priority") not in (None, ""):
        try:
            out["priority"] = int(str(row["priority"]))
        except ValueError:
            return RowError(f"priority must be an integer, got {row['priority']!r}")
    gold = row.get("gold_answer")
    if gold not in (None, ""):
        gold = str(gold)
        try:
            out["gold_answer"] = (
                loads_client_json(gold) if gold.lstrip().startswith(("[", "{", '"')) else gold
            )
        except json.JSONDecodeError as exc:
            return RowError(f"gold_answer looks like JSON but does not parse: {exc.msg}")
    unstorable = find_unstorable_text(out)
    if unstorable is not None:
        return RowError(unstorable)
    return out


def normalise_row(project: Project, raw: Any) -> dict[str, Any]:
    """A raw row as the values of a task insert, or a RowError."""
    if isinstance(raw, RowError):
        raise raw
    if not isinstance(raw, dict):
        raise RowError("a task must be an object")
    unknown = set(raw) - ROW_FIELDS
    if unknown:
        raise RowError(f"unknown field(s): {', '.join(sorted(unknown))}")
    external_id = raw.get("external_id", raw.get("id"))
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str) or not external_id.strip() or len(external_id) > 200:
        raise RowError("external_id must be a non-empty string of at most 200 characters")
    payload = raw.get("payload", raw.get("data"))
    if not isinstance(payload, dict) or not payload:
        raise RowError("payload must be a non-empty object")
    if len(json.dumps(payload)) > MAX_PAYLOAD_BYTES:
        raise RowError(f"payload is larger than {MAX_PAYLOAD_BYTES // 1024} KiB")
    priority = raw.get("priority", 0)
    if type(priority) is not int or not -100 <= priority <= 100:
        raise RowError("priority must be an integer from -100 to 100")
    gold = raw.get("gold_answer")
    if gold is not None:
        try:
            gold = validate_value(project.label_schema, gold, field="gold_answer")
        except InvalidInput as exc:
            raise RowError(exc.message) from exc
    return {
        "project_id": project.id,
        "external_id": external_id.strip(),
        "payload": payload,
        "priority": priority,
        "gold_answer": gold,
        "is_gold": gold is not None,
        "labels_needed": project.labels_per_item,
        "created_at": utcnow(),
    }


def import_tasks(
    session: Session,
    *,
    project: Project,
    rows: Iterable[tuple[int, Any]],
    chunk_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Import `rows` into `project`: all or nothing, existing external ids left as they are."""
    if project.status == ProjectStatus.COMPLETED:
        raise Conflict("A completed project takes no more tasks.", code="project_completed")
    # One import into a project at a time (until the commit): two that share external ids in different orders
    # would otherwise lock each other's index entries and deadlock.
    take_turns(session, f"import:project:{project.id}")
    errors: list[dict[str, Any]] = []
    bad_rows = 0
    seen: dict[str, int] = {}
    chunk: list[dict[str, Any]] = []
    total = created = 0

    def flush_chunk() -> None:
        nonlocal created
        if chunk and not errors:
            created += _insert_ignoring_existing(session, chunk)
        chunk.clear()

    for line, raw in rows:
        total += 1
        try:
            values = normalise_row(project, raw)
            first = seen.setdefault(values["external_id"], line)
            if first != line:
                raise RowError(f"duplicate external_id {values['external_id']!r} (first at line {first})")
        except RowError as exc:
            bad_rows += 1
            if len(errors) < MAX_REPORTED_ERRORS:
                errors.append({"line": line, "error": str(exc)})
            continue
        chunk.append(values)
        if len(chunk) >= chunk_size:
            flush_chunk()
            if progress:
                progress(total)
    flush_chunk()
    if progress:
        progress(total)
    if errors:
        shown = "" if bad_rows <= len(errors) else f" (the first {len(errors)} are listed)"
        raise InvalidInput(
            f"{bad_rows} of {total} rows are invalid{shown}; nothing was imported.",
            details={"rows": total, "invalid_rows": bad_rows, "errors": errors},
            code="import_rejected",
        )
    if total == 0:
        raise InvalidInput("The import has no rows.", code="import_empty")
    return ImportResult(rows=total, created=created, existing=total - created)


#: PostgreSQL: a chunk of tasks in one short statement, its columns passed as arrays. The multi-row VALUES that
#: an executemany becomes has ten parameters a row, and psycopg parses that text afresh for every chunk (it is too
#: long for its cache): measured, most of an import's CPU.
_INSERT_TASKS_FROM_ARRAYS = text(
    "INSERT INTO tasks (project_id, external_id, payload, priority, gold_answer, is_gold, status, labels_needed,"
    " labels_accepted, labels_in_progress, created_at)"
    " SELECT :project_id, t.external_id, t.payload, t.priority, t.gold_answer, t.is_gold, :status, :labels_needed,"
    " 0, 0, t.created_at"
    " FROM unnest(CAST(:external_ids AS text[]), CAST(:payloads AS jsonb[]), CAST(:priorities AS integer[]),"
    " CAST(:gold_answers AS jsonb[]), CAST(:is_golds AS boolean[]), CAST(:created_ats AS timestamptz[]))"
    " AS t(external_id, payload, priority, gold_answer, is_gold, created_at)"
    " ON CONFLICT (project_id, external_id) DO NOTHING RETURNING id"
)


def _insert_ignoring_existing(session: Session, values: list[dict[str, Any]]) -> int:
    """Insert a chunk of one project's tasks, leaving external ids it already has; how many were new."""
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        first = values[0]
        params = {
            "project_id": first["project_id"],
            "labels_needed": first["labels_needed"],
            "status": TaskStatus.OPEN.value,
            "external_ids": [v["external_id"] for v in values],
            # JSON as the ORM writes it: an ordinary item's gold_answer is JSON null, as with `insert(Task)`
            "payloads": [json.dumps(v["payload"]) for v in values],
            "priorities": [v["priority"] for v in values],
            "gold_answers": [json.dumps(v["gold_answer"]) for v in values],
            "is_golds": [v["is_gold"] for v in values],
            "created_ats": [v["created_at"] for v in values],
        }
        return len(session.execute(_INSERT_TASKS_FROM_ARRAYS, params).all())
    if dialect == "sqlite":
        stmt = sqlite.insert(Task).on_conflict_do_nothing(index_elements=["project_id", "external_id"])
    else:  # pragma: no cover - the two supported databases are handled above
        stmt = insert(Task)
    result = session.execute(stmt.returning(Task.id), values)
    return len(result.all())
