"""`python -m routing`: exit codes, the solve/generate round trip, the bench table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from routing import check_result, instance_from_json
from routing.bench import HEADER, Measurement, measure, next_snapshot
from routing.cli import main
from routing.generate import generate_instance
from routing.result import Assignment, Result


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routing", *args], capture_output=True, text=True, check=False, timeout=300
    )


def test_bad_instance_exits_2_and_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    document = {
        "tasks": [
            {
                "id": "t",
                "skill": "ocr",
                "min_level": 1,
                "labels_needed": 1,
                "deadline_hours": 4,
                "max_price": 9.5,
            }
        ],
        "annotators": [],
    }
    path.write_text(json.dumps(document))
    completed = _run("solve", str(path))
    assert completed.returncode == 2
    assert "tasks[0].max_price: expected an integer, got 9.5" in completed.stderr
    assert completed.stdout == ""


def test_invalid_json_and_missing_file_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"tasks": [')
    assert _run("solve", str(broken)).returncode == 2
    assert _run("solve", str(tmp_path / "absent.json")).returncode == 2


def test_generate_then_solve_round_trip(tmp_path: Path) -> None:
    instance_path = tmp_path / "instance.json"
    result_path = tmp_path / "result.json"
    generated = _run(
        "generate", "--tasks", "300", "--annotators", "30", "--seed", "7", "--out", str(instance_path)
    )
    assert generated.returncode == 0, generated.stderr
    solved = _run("solve", str(instance_path), "--out", str(result_path), "--method", "guided")
    assert solved.returncode == 0, solved.stderr
    instance = instance_from_json(json.loads(instance_path.read_text()))
    assert instance == generate_instance(300, 30, seed=7)
    document = json.loads(result_path.read_text())
    assert document["status"] == "optimal"
    assert document["method"] == "guided"
    assert set(document["stats"]) >= {"build_s", "solve_s", "arcs", "eligible_pairs", "rounds", "certified"}
    result = Result(
        status=document["status"],
        method=document["method"],
        assignments=tuple(Assignment(a["task"], a["annotator"]) for a in document["assignments"]),
        assigned=document["assigned"],
        priority_total=document["priority_total"],
        cost_total=document["cost_total"],
        unfilled=document["unfilled"],
    )
    check_result(instance, result)


def test_solve_writes_to_stdout_and_takes_warm_potentials(tmp_path: Path, capsys: object) -> None:
    instance_path = tmp_path / "instance.json"
    assert (
        main(["generate", "--tasks", "200", "--annotators", "20", "--seed", "2", "--out", str(instance_path)])
        == 0
    )
    first_path = tmp_path / "first.json"
    assert main(["solve", str(instance_path), "--method", "guided", "--out", str(first_path)]) == 0
    assert main(["solve", str(instance_path), "--method", "guided", "--warm", str(first_path)]) == 0
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    warm = json.loads(out)
    assert warm["cost_total"] == json.loads(first_path.read_text())["cost_total"]


def test_unknown_bench_size_exits_2() -> None:
    assert main(["bench", "--sizes", "XL"]) == 2


def test_bench_measurement_and_next_snapshot() -> None:
    instance = generate_instance(1000, 100, seed=1)
    snapshot = next_snapshot(instance, 1)
    assert len(snapshot.tasks) == len(instance.tasks)
    assert len({t.id for t in snapshot.tasks}) == len(snapshot.tasks)
    figures = measure(Measurement("S", 1, "guided"))
    assert figures["certified"] is True
    greedy = measure(Measurement("S", 1, "greedy"))
    at_volume = measure(Measurement("S", 1, "at-volume", volume=greedy["placed"]))
    assert at_volume["placed"] == greedy["placed"]
    assert at_volume["cost"] <= greedy["cost"]
    assert (greedy["placed"], -greedy["cost"]) <= (figures["placed"], -figures["cost"])
    assert HEADER.startswith("| size |")
