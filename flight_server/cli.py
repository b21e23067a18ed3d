"""The ``quiver`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from superfile import SuperfileError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quiver",
        description="Quiver: SQL, BM25 and vector search over Parquet superfiles.",
    )
    parser.add_argument("--log-level", default="WARNING",
                        help="logging level: DEBUG, INFO, WARNING or ERROR (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="write one superfile, reopen it lazily and run searches on it",
        description="Write one superfile from the project's data (or generated data when the "
        "data folder is absent), reopen it lazily from disk and run BM25, vector, filtered "
        "vector and exact-match queries, reporting the reads each one costs.",
    )
    demo.add_argument("--out", type=Path, default=Path("data"),
                      help="folder to write the demo superfile into (default ./data)")
    demo.add_argument("--rows", type=int, default=20000,
                      help="number of rows to write (default 20000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "demo":
            from flight_server.demo import run_demo

            run_demo(args.out, rows=args.rows)
    except SuperfileError as exc:
        print(f"quiver: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
