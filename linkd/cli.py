"""The ``linkd`` command line: ``serve`` runs the daemon; every other command talks to its admin API."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkd", description="Byte-for-byte Kafka cluster-link daemon")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--data-dir", default="./data")
    serve.add_argument("--listener", default="127.0.0.1:9092")
    serve.add_argument("--advertised-listener")
    serve.add_argument("--admin", default="127.0.0.1:8090")
    serve.add_argument("--node-id", type=int, default=1)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(f"linkd {args.command}: not available yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
