"""The ``nborch`` command (also ``python -m nborch``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nborch", description="A notebook-native orchestrator.")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a built-in workflow that shows progress for a few seconds")
    demo.add_argument("--max-concurrency", type=int, default=None, metavar="N")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        return demo(max_concurrency=args.max_concurrency)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
