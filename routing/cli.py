"""`python -m routing`: solve a JSON instance, generate synthetic ones, run the benchmark.

Exit codes: 0 on success (the result's status says how the solve went), 2 on a bad instance or bad
arguments (the message, naming the field, goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from routing.bench import SIZES, run_bench
from routing.generate import generate_instance
from routing.instance import InstanceError, instance_from_json, instance_to_json
from routing.solve import METHODS, OBJECTIVES, solve

EXIT_BAD_INPUT = 2


def _write_json(document: dict[str, Any], out: str | None) -> None:
    text = json.dumps(document, indent=1, sort_keys=False)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        Path(out).write_text(text + "\n", encoding="utf-8")


def _read_json(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InstanceError("", f"cannot read {what} {path}: {error.strerror}") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InstanceError("", f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from error


def _solve_command(args: argparse.Namespace) -> int:
    instance = instance_from_json(_read_json(args.instance, "instance"))
    warm = None
    if args.warm is not None:
        document = _read_json(args.warm, "result")
        # A result lists only positive shadow prices; none at all means an uncongested market.
        warm = document.get("potentials", {}) if isinstance(document, dict) else None
        if not isinstance(warm, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in warm.values()
        ):
            raise InstanceError("potentials", f"{args.warm}: expected an object of integer shadow prices")
    result = solve(
        instance,
        method=args.method,
        time_limit_s=args.time_limit,
        warm_potentials=warm,
        objective=args.objective,
    )
    _write_json(result.to_json(), args.out)
    return 0


def _generate_command(args: argparse.Namespace) -> int:
    instance = generate_instance(args.tasks, args.annotators, n_skills=args.skills, seed=args.seed)
    _write_json(instance_to_json(instance), args.out)
    return 0


def _bench_command(args: argparse.Namespace) -> int:
    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    unknown = [size for size in sizes if size not in SIZES]
    if unknown:
        raise InstanceError("--sizes", f"unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}")
    table = run_bench(sizes, reference=not args.no_reference, seed=args.seed, progress=sys.stderr)
    if args.out is None:
        sys.stdout.write(table)
    else:
        Path(args.out).write_text(table, encoding="utf-8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m routing`."""
    parser = argparse.ArgumentParser(prog="python -m routing", description="Labelforce routing engine")
    commands = parser.add_subparsers(dest="command", required=True)

    solve_parser = commands.add_parser("solve", help="solve an instance JSON file")
    solve_parser.add_argument("instance", help="instance JSON file")
    solve_parser.add_argument("--out", help="write the result JSON here instead of stdout")
    solve_parser.add_argument("--method", choices=METHODS, default="flow")
    solve_parser.add_argument("--objective", choices=OBJECTIVES, default="exact")
    solve_parser.add_argument("--time-limit", type=float, default=None, help="seconds (guided, cpsat)")
    solve_parser.add_argument(
        "--warm", help="a previous result JSON whose potentials start the guided method"
    )
    solve_parser.set_defaults(run=_solve_command)

    generate_parser = commands.add_parser("generate", help="write a seeded synthetic instance")
    generate_parser.add_argument("--tasks", type=int, required=True)
    generate_parser.add_argument("--annotators", type=int, required=True)
    generate_parser.add_argument("--skills", type=int, default=None)
    generate_parser.add_argument("--seed", type=int, default=0)
    generate_parser.add_argument("--out", help="write the instance JSON here instead of stdout")
    generate_parser.set_defaults(run=_generate_command)

    bench_parser = commands.add_parser("bench", help="benchmark the standard seeded instances")
    bench_parser.add_argument("--sizes", default="S,M,L", help="comma-separated, from " + ",".join(SIZES))
    bench_parser.add_argument("--out", help="write the Markdown table here instead of stdout")
    bench_parser.add_argument("--no-reference", action="store_true", help="skip the one-shot exact solve")
    bench_parser.add_argument("--seed", type=int, default=1)
    bench_parser.set_defaults(run=_bench_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "tasks", 0) < 0 or getattr(args, "annotators", 0) < 0:
        parser.error("--tasks and --annotators must be >= 0")
    try:
        code: int = args.run(args)
    except InstanceError as error:
        sys.stderr.write(f"error: {error}\n")
        return EXIT_BAD_INPUT
    return code
