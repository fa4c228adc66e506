"""The ``linkd`` command line: ``serve`` runs the daemon; every other command talks to its admin API."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    import trio

    from .daemon import ServeConfig, parse_hostport, serve

    try:
        config = ServeConfig(
            data_dir=Path(args.data_dir),
            listener=parse_hostport(args.listener, "--listener"),
            advertised=parse_hostport(args.advertised_listener, "--advertised-listener") if args.advertised_listener else None,
            admin=parse_hostport(args.admin, "--admin"),
            node_id=args.node_id,
        )
    except ValueError as exc:
        print(f"linkd serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(serve, config)
    except BaseExceptionGroup as group:
        startup, rest = group.split(OSError)
        if startup is None or rest is not None:
            raise
        for exc in _leaves(startup):
            print(f"linkd serve: {exc.strerror or exc} (listener {args.listener}, admin {args.admin}, data dir {args.data_dir})", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkd", description="Byte-for-byte Kafka cluster-link daemon")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--data-dir", default="./data", help="where partition logs and the control store live")
    serve.add_argument("--listener", default="127.0.0.1:9092", help="Kafka listener HOST:PORT")
    serve.add_argument("--advertised-listener", help="HOST:PORT clients are told to connect to")
    serve.add_argument("--admin", default="127.0.0.1:8090", help="admin HTTP API HOST:PORT")
    serve.add_argument("--node-id", type=int, default=1)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
