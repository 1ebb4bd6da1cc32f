"""`flask import-tasks PROJECT_ID FILE`: the API's import from a file, with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path

import click
from flask import Flask
from flask.cli import with_appcontext
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from marketplace.db import unit_of_work
from marketplace.errors import DomainError
from marketplace.projects import imports
from marketplace.projects.models import Project


def _count_rows(path: Path, fmt: str) -> int | None:
    if fmt == "json":
        return None
    with path.open("rb") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if fmt in {"csv", "tsv"} else lines


@click.command("import-tasks")
@with_appcontext
@click.argument("project_id", type=int)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(imports.FORMATS), help="Default: from the file's extension."
)
def import_tasks_command(project_id: int, file: Path, fmt: str | None) -> None:
    """Import tasks into a project from a JSON, JSONL, CSV or TSV file (all or nothing)."""
    fmt = fmt or {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}.get(
        file.suffix.lower()
    )
    if fmt is None:
        raise click.UsageError("cannot tell the format from the extension: pass --format")
    console = Console(stderr=True)
    total = _count_rows(file, fmt)
    try:
        with (
            unit_of_work() as session,
            Progress(
                TextColumn("importing"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=not console.is_terminal and not os.environ.get("FORCE_PROGRESS"),
            ) as progress,
        ):
            project = session.get(Project, project_id)
            if project is None:
                raise click.ClickException(f"project {project_id} not found")
            bar = progress.add_task("rows", total=total)
            with file.open("rb") as stream:
                result = imports.import_tasks(
                    session,
                    project=project,
                    rows=imports.read_rows(stream, fmt),
                    progress=lambda done: progress.update(bar, completed=done),
                )
    except DomainError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        if isinstance(exc.details, dict):
            for error in exc.details.get("errors", [])[:20]:
                console.print(f"  line {error['line']}: {error['error']}")
        raise SystemExit(1) from exc
    click.echo(f"{result.rows:,} rows: {result.created:,} created, {result.existing:,} already present")


def init_app(app: Flask) -> None:
    app.cli.add_command(import_tasks_command)
