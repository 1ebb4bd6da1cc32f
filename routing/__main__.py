"""`python -m routing` (and the `labelforce-routing` script)."""

from routing.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
