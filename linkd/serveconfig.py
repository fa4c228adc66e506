"""``linkd serve`` settings from flags, ``LINKD_*`` environment variables and a ``--config`` properties file.

Precedence: flags > environment > file > defaults. The mechanism is generic over the serve parser's
options, so every serve flag (including ones added later) has a property name and a variable:

* property name: the long flag without ``--``, dashes turned into dots (``--max-connections`` is
  ``max.connections``, ``--log-retention-check-interval-ms`` is ``log.retention.check.interval.ms``),
  plus Kafka's own names where linkd's flag differs (``listeners``, ``advertised.listeners``, ``log.dirs``,
  ``node.id`` ...; see ``KAFKA_ALIASES``);
* environment variable: ``LINKD_`` and the flag upper-cased with underscores (``LINKD_DATA_DIR``,
  ``LINKD_MAX_CONNECTIONS``); ``LINKD_CONFIG`` names the file when ``--config`` is not given.

A repeatable flag takes a comma-separated list from the file or the environment, as Kafka's ``listeners``
does. A switch (``--foo`` with no value) takes ``true`` or ``false``. A key in the file that is no serve
setting is refused, naming it; a Kafka broker setting linkd does not implement is refused as "not supported
yet" rather than accepted and ignored. Environment variables other than the known ``LINKD_*`` names are
left alone (the CLI reads ``LINKD_ADMIN_USER`` and friends).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from .link.config import LinkConfigError, parse_properties

ENV_PREFIX = "LINKD_"
# Kafka broker name -> the linkd flag (without --) that does the same.
KAFKA_ALIASES = {
    "listeners": "listener",
    "advertised.listeners": "advertised-listener",
    "log.dirs": "data-dir",
    "log.dir": "data-dir",
    "node.id": "node-id",
    "broker.id": "node-id",
}
# Kafka broker settings people copy from a server.properties that linkd does not implement (yet).
KAFKA_NOT_SUPPORTED = frozenset({
    "process.roles", "controller.quorum.voters", "controller.quorum.bootstrap.servers", "controller.listener.names",
    "inter.broker.listener.name", "zookeeper.connect", "num.network.threads", "num.io.threads",
    "num.partitions", "default.replication.factor", "auto.create.topics.enable", "log.segment.bytes",
    "log.retention.hours", "log.retention.ms", "log.retention.bytes", "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor", "transaction.state.log.min.isr", "min.insync.replicas",
    "group.initial.rebalance.delay.ms", "socket.send.buffer.bytes", "socket.receive.buffer.bytes",
    "socket.request.max.bytes", "num.recovery.threads.per.data.dir",
})
# Flags that steer this mechanism itself, or are per-run only.
NOT_LAYERED = frozenset({"help", "config", "print-config"})
# Flags whose values are secrets themselves (not paths to them): hidden by --print-config.
SECRET_WORDS = ("password", "keystore-key", "jaas-config")


class ServeConfigError(ValueError):
    """A setting from the file or the environment cannot be used; the message names it and where it came from."""


def _settings(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """flag name without ``--`` -> its action, for every layered serve option."""
    out = {}
    for action in parser._actions:
        longs = [o[2:] for o in action.option_strings if o.startswith("--")]
        if longs and longs[0] not in NOT_LAYERED:
            out[longs[0]] = action
    return out


def property_name(flag: str) -> str:
    return flag.replace("-", ".")


def display_name(flag: str) -> str:
    """Kafka's name for the setting where it has one, else linkd's property name."""
    return next((alias for alias, target in KAFKA_ALIASES.items() if target == flag), property_name(flag))


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.replace("-", "_").upper()


def _convert(action: argparse.Action, raw: str, where: str):
    if action.nargs == 0:  # a switch: store_true / store_false
        lowered = raw.strip().lower()
        if lowered not in ("true", "false"):
            raise ServeConfigError(f"{where}: expected true or false, got {raw!r}")
        return (lowered == "true") == isinstance(action, argparse._StoreTrueAction)

    # typeshed also allows a type *name* registered with ArgumentParser.register (a str); serve's flags
    # all pass a converter (or none), so this is the callable (or None) argparse itself would call.
    convert = cast("Callable[[str], Any] | None", action.type)

    def one(text: str):
        text = text.strip()
        try:
            value = convert(text) if convert else text
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ServeConfigError(f"{where}: invalid value {text!r} ({exc})") from None
        if action.choices is not None and value not in action.choices:
            raise ServeConfigError(f"{where}: {text!r} is not one of {', '.join(map(str, action.choices))}")
        return value

    if isinstance(action, argparse._AppendAction):
        return [one(part) for part in raw.split(",") if part.strip()]
    return one(raw)


def read_file(path: str, settings: Mapping[str, argparse.Action]) -> dict[str, tuple[str, str]]:
    """flag -> (raw value, where) from a properties file; unknown and unsupported keys refused."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ServeConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    try:
        properties = parse_properties(text)
    except LinkConfigError as exc:
        raise ServeConfigError(f"--config {path}: {exc}") from None
    by_property = {property_name(flag): flag for flag in settings}
    by_property.update({alias: flag for alias, flag in KAFKA_ALIASES.items() if flag in settings})
    out: dict[str, tuple[str, str]] = {}
    for key, value in properties.items():
        flag = by_property.get(key)
        if flag is None:
            if key in KAFKA_NOT_SUPPORTED:
                raise ServeConfigError(f"--config {path}: {key} is a Kafka broker setting linkd does not support yet")
            raise ServeConfigError(f"--config {path}: unknown key {key!r} (not a linkd serve setting; see `linkd serve --help`)")
        if flag in out:
            raise ServeConfigError(f"--config {path}: {key} sets {out[flag][1].rsplit(' ', 1)[-1]} a second time")
        out[flag] = (value, f"--config {path} key {key}")
    return out


def apply_layers(parser: argparse.ArgumentParser, serve_argv: list[str], args: argparse.Namespace,
                 environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Fill ``args`` from the environment and ``args.config`` where no flag was given. Returns flag -> the
    source of its value ("flag", "env LINKD_X", "file", "default") for ``--print-config``."""
    environ = os.environ if environ is None else environ
    settings = _settings(parser)
    explicit = _explicit_dests(parser, serve_argv)
    config_path = getattr(args, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    from_file = read_file(config_path, settings) if config_path else {}
    sources: dict[str, str] = {}
    for flag, action in settings.items():
        if action.dest in explicit:
            sources[flag] = "flag"
            continue
        variable = env_name(flag)
        if variable in environ:
            setattr(args, action.dest, _convert(action, environ[variable], f"environment variable {variable}"))
            sources[flag] = f"env {variable}"
        elif flag in from_file:
            raw, where = from_file[flag]
            setattr(args, action.dest, _convert(action, raw, where))
            sources[flag] = "file"
        else:
            sources[flag] = "default"
    return sources


def _explicit_dests(parser: argparse.ArgumentParser, serve_argv: list[str]) -> set[str]:
    """The dests the command line itself set: parse again with every default suppressed."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        seen = parser.parse_args(serve_argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(seen))


def render(parser: argparse.ArgumentParser, args: argparse.Namespace, sources: Mapping[str, str]) -> str:
    """The effective settings as a properties file (usable as ``--config``), each after a comment saying
    where its value came from; unset settings are commented out."""
    lines = ["# linkd serve: effective settings (precedence: flag > env > file > default)"]
    for flag, action in sorted(_settings(parser).items()):
        value = getattr(args, action.dest, None)
        lines.append(f"# from {sources.get(flag, 'default')} (flag --{flag}, env {env_name(flag)})")
        if value is None or value == []:
            lines.append(f"#{display_name(flag)}=")
            continue
        if any(word in flag for word in SECRET_WORDS):
            shown = "********"
        elif isinstance(value, list):
            shown = ",".join(map(str, value))
        elif isinstance(value, bool):
            shown = str(value).lower()
        else:
            shown = str(value)
        lines.append(f"{display_name(flag)}={shown}")
    return "\n".join(lines) + "\n"


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--config", metavar="FILE", help="a .properties file of serve settings (Kafka names: listeners, log.dirs, node.id, max.connections, ...); flags and LINKD_* variables win over it")
    serve.add_argument("--print-config", action="store_true", help="print the effective settings and where each came from, then exit")
    serve.set_defaults(serve_parser=serve)


def settle(serve: argparse.ArgumentParser, args: argparse.Namespace) -> int | None:
    """Fill ``args`` from the environment and --config (``serve.parsed_args`` are the flags given); an exit
    status when serve stops here (--print-config printed, or a setting refused), else None."""
    try:
        sources = apply_layers(serve, list(getattr(serve, "parsed_args", [])), args)
    except ServeConfigError as exc:
        print(f"linkd serve: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        sys.stdout.write(render(serve, args, sources))
        return 0
    return None
