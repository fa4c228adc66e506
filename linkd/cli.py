"""The ``linkd`` command line: ``serve`` runs the daemon; ``link`` and ``mirror`` talk to its admin API.

Every client command takes ``--json`` (machine-readable output for runbooks) and exits 0 on success, or
non-zero with a one-line reason on stderr. The daemon's address comes from ``--admin``, then the
``LINKD_ADMIN`` environment variable, then 127.0.0.1:8090.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import __version__
from .adminclient import AdminClient, AdminClientError
from .logsetup import FORMATS as LOG_FORMATS
from .logsetup import LEVELS as LOG_LEVELS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandFailed(Exception):
    """The command ran but the outcome is a failure (printed output stays, exit status non-zero)."""


# -- serve ---------------------------------------------------------------------------------------


def _txn_config(args):
    from .txn.coordinator import TxnConfig

    values = {"--transaction-max-timeout-ms": args.transaction_max_timeout_ms,
              "--transactional-id-expiration-ms": args.transactional_id_expiration_ms,
              "--transaction-abort-timed-out-transaction-cleanup-interval-ms": args.transaction_abort_timed_out_transaction_cleanup_interval_ms}
    for flag, value in values.items():
        if value <= 0:
            raise ValueError(f"{flag} must be positive, not {value}")
    return TxnConfig(max_timeout_ms=args.transaction_max_timeout_ms, id_expiration_ms=args.transactional_id_expiration_ms,
                     abort_check_interval_ms=args.transaction_abort_timed_out_transaction_cleanup_interval_ms)


def _serve(args: argparse.Namespace) -> int:
    if (exit_status := _settle_serve_settings(args)) is not None:
        return exit_status
    import trio

    from .broker.acl import parse_super_users
    from .broker.limits import limits_from_args
    from .daemon import DataDirInUse, ServeConfig, parse_hostport, serve
    from .storage.cleaner import CleanerConfig

    try:
        given = {"dedupe_buffer_size": args.log_cleaner_dedupe_buffer_size, "backoff_ms": args.log_cleaner_backoff_ms}
        cleaner = CleanerConfig(**{k: v for k, v in given.items() if v is not None})
        config = ServeConfig(
            **_admin_serve_config(args),
            data_dir=Path(args.data_dir),
            listener=("127.0.0.1", 9092),
            advertised=None,
            admin=parse_hostport(args.admin or "127.0.0.1:8090", "--admin"),
            node_id=args.node_id,
            ready_file=Path(args.ready_file) if args.ready_file else None,
            retention_check_interval_ms=args.log_retention_check_interval_ms,
            cleaner=cleaner,
            limits=limits_from_args(args),
            secrets_key_file=Path(args.secrets_key_file) if args.secrets_key_file else None,
            **_listener_config(args),
            authorizer=None if args.authorizer == "none" else args.authorizer,
            super_users=tuple(parse_super_users(args.super_users)),
            allow_everyone_if_no_acl_found=args.allow_everyone_if_no_acl_found,
            transactions=_txn_config(args),
        )
        if config.authorizer is None and (config.super_users or config.allow_everyone_if_no_acl_found):
            raise ValueError("--super-users and --allow-everyone-if-no-acl-found need --authorizer standard")
        from .broker.endpoints import build_endpoints

        build_endpoints(config.listener_specs(), config.security)  # a bad keystore or mechanism stops here, named
        if config.secrets_key_file:
            from .link.secrets import SecretsKey

            SecretsKey.from_file(config.secrets_key_file)  # a bad key file stops the daemon here, with its reason
    except ValueError as exc:
        print(f"linkd serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .logsetup import configure

    configure(args.log_level, args.log_format)
    try:
        trio.run(serve, config)
    except DataDirInUse as exc:
        print(f"linkd serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BaseExceptionGroup as group:
        startup, rest = group.split(OSError)
        if startup is None or rest is not None:
            raise
        for failure in _leaves(startup):
            print(f"linkd serve: {getattr(failure, 'strerror', None) or failure} (listener {','.join(args.listener or [DEFAULT_LISTENER])}, admin {args.admin}, data dir {args.data_dir})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


DEFAULT_LISTENER = "127.0.0.1:9092"


def _add_listener_arguments(serve: argparse.ArgumentParser) -> None:
    """Kafka's listener flags (linkd.broker.listeners) and one flag per listener security setting."""
    from .broker.listeners import KNOWN_KEYS

    serve.add_argument("--listener", action="append", metavar="[NAME://]HOST:PORT",
                       help=f"a Kafka listener, repeatable (Kafka's listeners); a bare HOST:PORT is the listener PLAINTEXT (default {DEFAULT_LISTENER})")
    serve.add_argument("--advertised-listener", action="append", metavar="[NAME://]HOST:PORT",
                       help="the address clients of listener NAME are told to connect to, repeatable (Kafka's advertised.listeners)")
    serve.add_argument("--listener-security-protocol-map", metavar="NAME:PROTOCOL,...",
                       help="each listener name's security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (Kafka's listener.security.protocol.map)")
    serve.add_argument("--listener-config", action="append", default=[], metavar="KEY=VALUE",
                       help="a listener security setting by Kafka's broker name (ssl.keystore.location=..., or listener.name.<name>.ssl.client.auth=required), repeatable")
    serve.add_argument("--listener-config-file", metavar="FILE", help="the same settings as a .properties file (keeps passwords off the command line)")
    for key in sorted(KNOWN_KEYS):
        serve.add_argument("--" + key.replace(".", "-"), dest="listener_key_" + key.replace(".", "_"), metavar="VALUE",
                           help=f"{key} for every listener (as --listener-config {key}=VALUE)")


def _listener_config(args: argparse.Namespace) -> dict:
    """ServeConfig's listeners and security fields; ValueError names a bad flag."""
    from .broker.listeners import KNOWN_KEYS, parse_listeners, parse_properties

    text = None
    if args.listener_config_file:
        try:
            text = Path(args.listener_config_file).read_text()
        except OSError as exc:
            raise ValueError(f"--listener-config-file {args.listener_config_file}: {exc.strerror or exc}") from None
    pairs = [f"{key}={getattr(args, 'listener_key_' + key.replace('.', '_'))}" for key in sorted(KNOWN_KEYS)
             if getattr(args, "listener_key_" + key.replace(".", "_"), None) is not None]
    security = parse_properties(pairs + list(args.listener_config), text)
    specs = parse_listeners(args.listener or [DEFAULT_LISTENER], args.listener_security_protocol_map, args.advertised_listener)
    return {"listeners": tuple(specs), "security": security}


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


# -- user ----------------------------------------------------------------------------------------
# Offline on the data dir: control.db is SQLite in WAL mode, so this is safe while the daemon runs, and the
# daemon reads credentials at every authentication, so a change counts from the next connection on.

SCRAM_CHOICES = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def _user_store(args: argparse.Namespace):
    from .broker.users import UserStore
    from .controlstore import ControlStore

    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"--data-dir {data_dir} is not a directory")
    return UserStore(ControlStore(data_dir / "control.db"))


def _read_password(args: argparse.Namespace) -> str:
    import getpass

    if args.password_file:
        try:
            text = Path(args.password_file).read_text()
        except OSError as exc:
            raise ValueError(f"--password-file {args.password_file}: {exc.strerror or exc}") from None
        password = text.splitlines()[0] if text else ""
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise ValueError("the passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise ValueError("the password is empty")
    return password


def _user_command(args: argparse.Namespace) -> int:
    from .broker.users import CredentialError, check_iterations, check_user_name, credential_from_password

    try:
        store = _user_store(args)
        if args.user_command == "list":
            users = store.users()
            if args.json:
                print(json.dumps([{"user": u, "mechanisms": [{"mechanism": m, "iterations": i} for m, i in ms.items()]} for u, ms in users.items()], indent=2))
            else:
                _table(["USER", "MECHANISMS"], [[u, ", ".join(f"{m} (iterations {i})" for m, i in ms.items())] for u, ms in users.items()])
            return EXIT_OK
        check_user_name(args.name)
        mechanisms = SCRAM_CHOICES if args.mechanism in (None, "all") else (args.mechanism,)
        if args.user_command == "add":
            for m in mechanisms:
                check_iterations(m, args.iterations)
            password = _read_password(args)
            for m in mechanisms:
                store.upsert(args.name, m, credential_from_password(m, password, args.iterations))
            result = {"user": args.name, "mechanisms": list(mechanisms), "iterations": args.iterations}
            _emit(args, result, lambda d: print(f"Set {', '.join(d['mechanisms'])} credentials for {d['user']} (also usable with PLAIN)"))
            return EXIT_OK
        removed = sum(store.delete(args.name, m) for m in mechanisms)
        if not removed:
            raise ValueError(f"user {args.name} has no {' or '.join(mechanisms)} credential")
        _emit(args, {"user": args.name, "deleted": removed}, lambda d: print(f"Deleted {d['deleted']} credential(s) of {d['user']}"))
        return EXIT_OK
    except (ValueError, CredentialError) as exc:
        print(f"linkd user {args.user_command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"linkd user {args.user_command}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED


def _add_user_parser(sub) -> None:
    from .scram import DEFAULT_ITERATIONS

    users = sub.add_parser("user", help="SCRAM/PLAIN users of linkd's listeners (offline on the data dir; safe while the daemon runs)")
    actions = users.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--data-dir", required=True, help="the daemon's data dir (its control.db holds the credentials)")
    base.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p = actions.add_parser("add", parents=[base], help="create or change a user's password (salted SCRAM credentials; PLAIN checks against them)")
    p.add_argument("name")
    p.add_argument("--mechanism", choices=[*SCRAM_CHOICES, "all"], default="all", help="which SCRAM credential to set (default: both)")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"PBKDF2 iterations (default {DEFAULT_ITERATIONS}, as kafka-configs)")
    p.add_argument("--password-file", help="read the password from the first line of FILE (default: prompt, or one line of stdin)")
    p.set_defaults(func=_user_command)
    p = actions.add_parser("delete", parents=[base], help="remove a user's credentials")
    p.add_argument("name")
    p.add_argument("--mechanism", choices=[*SCRAM_CHOICES, "all"], default="all")
    p.set_defaults(func=_user_command)
    p = actions.add_parser("list", parents=[base], help="users and their mechanisms (never a secret)")
    p.set_defaults(func=_user_command)


# -- secrets -------------------------------------------------------------------------------------


def _secrets_generate(args: argparse.Namespace) -> int:
    from .link.secrets import generate_key_file

    try:
        generate_key_file(args.file)
    except OSError as exc:
        print(f"linkd secrets generate-key: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Wrote a new secrets key to {args.file} (mode 0600); start linkd with --secrets-key-file {args.file}")
    return EXIT_OK


def _secrets_rotate(args: argparse.Namespace) -> int:
    from .link.secrets import SecretsKeyError, SecretsUnavailable, rotate_data_dir

    try:
        count = rotate_data_dir(Path(args.data_dir), args.key_file, args.new_key_file)
    except (SecretsKeyError, SecretsUnavailable, OSError) as exc:
        print(f"linkd secrets rotate-key: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Re-encrypted the secrets of {count} link(s) under the key in {args.new_key_file}; start linkd with --secrets-key-file {args.new_key_file}")
    return EXIT_OK


# -- output helpers ------------------------------------------------------------------------------


OUTPUT_FORMATS = ("human", "json", "yaml")


def _emit(args: argparse.Namespace, data, human) -> None:
    output = getattr(args, "output_format", None) or "human"
    if output == "json":
        print(json.dumps(data, indent=2, sort_keys=False))
    elif output == "yaml":
        import yaml  # imported here: only -o yaml needs it

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True))
    else:
        human(data)


def _table(columns: list[str], rows: list[list]) -> None:
    """On a terminal a rich table that folds long cells; otherwise (piped, redirected) plain columns as
    wide as their longest cell, so `| grep SOURCE_UNAVAILABLE` and `| awk` see every name and state whole."""
    cells = [[str(c) for c in row] for row in rows]
    if not sys.stdout.isatty():
        widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
        for row in [columns, *cells]:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in cells:
        table.add_row(*row)
    Console().print(table)


# -- link commands -------------------------------------------------------------------------------


def _link_create(args, client: AdminClient) -> int:
    from .link.config import LinkConfigError, parse_overrides, parse_properties

    configs: dict[str, str] = {}
    try:
        if args.config_file:
            try:
                configs.update(parse_properties(Path(args.config_file).read_text()))
            except OSError as exc:
                raise LinkConfigError(f"cannot read --config-file {args.config_file}: {exc.strerror}") from exc
        configs.update(parse_overrides(args.config or []))
    except LinkConfigError as exc:
        raise AdminClientError(str(exc)) from exc
    if args.bootstrap_server:
        configs["bootstrap.servers"] = args.bootstrap_server
    if "bootstrap.servers" not in configs:
        raise AdminClientError("--bootstrap-server (or bootstrap.servers in --config-file) is required")
    link = client.create_link(args.name, configs, validate=not args.no_validate)
    _emit(args, link, lambda d: print(f"Created link {d['link_name']} ({d['link_id']}) to {d['bootstrap_servers']}, state {d['link_state']}"))
    return EXIT_OK


def _link_rows(links: list[dict]) -> list[list]:
    return [[k["link_name"], k["link_state"], k["bootstrap_servers"], k.get("source_cluster_id") or "-", len(k["topic_names"])] for k in links]


def _link_list(args, client: AdminClient) -> int:
    links = client.list_links()
    _emit(args, links, lambda d: _table(["LINK", "STATE", "BOOTSTRAP", "SOURCE CLUSTER", "MIRRORS"], _link_rows(d)))
    return EXIT_OK


def _link_describe(args, client: AdminClient) -> int:
    link = client.describe_link(args.name)

    def human(d):
        print(f"Link {d['link_name']} ({d['link_id']})")
        print(f"  state: {d['link_state']}" + (f" ({d['link_error_message']})" if d.get("link_error_message") else ""))
        print(f"  source: {d['bootstrap_servers']} cluster {d.get('source_cluster_id') or '-'}")
        print(f"  mirrors: {', '.join(d['topic_names']) or '-'}")
        for task in d.get("tasks") or []:
            line = f"  task {task['task_name']}: {task['state']}" + (f" ({task['state_reason']})" if task.get("state_reason") else "")
            if task.get("last_success_ms"):
                line += f", last success {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(task['last_success_ms'] / 1000))}"
            if task.get("last_error_code") is not None:
                line += f", last error code {task['last_error_code']}"
            print(line)
        for key, label in (("consumer_offset_sync", "consumer offset sync"), ("topic_config_sync", "topic config sync"), ("auto_create", "auto-create mirrors")):
            if d.get(key):
                print(f"  {label}: {json.dumps(d[key])}")
        for c in d["configs"]:
            print(f"  {c['name']}={c['value']}")

    _emit(args, link, human)
    return EXIT_OK


def _link_update(args, client: AdminClient) -> int:
    from .link.config import LinkConfigError, parse_overrides

    try:
        set_configs = parse_overrides(args.config or [])
    except LinkConfigError as exc:
        raise AdminClientError(str(exc)) from exc
    delete_configs = list(args.delete_config or [])
    if not set_configs and not delete_configs:
        raise AdminClientError("nothing to change: give --config KEY=VALUE and/or --delete-config KEY")
    client.alter_link_configs(args.name, set_configs, delete_configs)
    link = client.describe_link(args.name)
    _emit(args, link, lambda d: print(f"Updated link {d['link_name']}: " + ", ".join([f"{k}={v}" for k, v in set_configs.items()] + [f"{k} reset" for k in delete_configs])))
    return EXIT_OK


def _link_delete(args, client: AdminClient) -> int:
    failed_over = client.delete_link(args.name, force=args.force)

    def human(d):
        for r in d["failed_over"]:
            print(f"Failed over mirror {r['mirror_topic_name']}: {r.get('mirror_status')}, possible data loss {r.get('possible_data_loss_records', 0)} records")
        print(f"Deleted link {args.name}")

    _emit(args, {"link_name": args.name, "deleted": True, "failed_over": failed_over}, human)
    return EXIT_OK


# -- mirror commands -----------------------------------------------------------------------------


def _known(value, unknown: str = "unknown"):
    return unknown if value is None else value


def _mirror_rows(mirrors: list[dict]) -> list[list]:
    return [[m["mirror_topic_name"], m["link_name"], m["source_topic_name"], m["mirror_status"], m["mirror_topic_error"], m["num_partitions"], _known(m["max_per_partition_mirror_lag"])] for m in mirrors]


def _age(ms) -> str:
    return "unknown" if ms is None else f"{ms / 1000:.1f}s"


def _stop_line(p: dict) -> str:
    """One partition of a promote/failover answer, as the runbook shows it."""
    line = f"  partition {p['partition']}: stop offset {p['stop_offset']}, "
    if p["source_end_offset"] is None:
        return line + "source end offset never seen, possibly lost unknown"
    line += f"source end offset {p['source_end_offset']} (seen {_age(p['source_end_offset_age_ms'])} before the stop"
    if p["records_possibly_lost"] is None:
        return line + f", before linkd restarted), possibly lost unknown (at least {p['records_possibly_lost_at_least']})"
    return line + f"), possibly lost {p['records_possibly_lost']}"


def _mirror_create(args, client: AdminClient) -> int:
    mirror = client.create_mirror(args.topic, args.link, args.source_topic)
    if args.wait:
        mirror = _wait_caught_up(args, client, args.topic)
    _emit(args, mirror, lambda d: print(f"Mirror {d['mirror_topic_name']} of {d['source_topic_name']} over link {d['link_name']}: {d['mirror_status']}, max lag {d['max_per_partition_mirror_lag']}"))
    return EXIT_OK


def _caught_up(m: dict) -> bool:
    return m["mirror_status"] == "ACTIVE" and all(p["source_high_watermark"] >= 0 and p["lag"] == 0 and p["last_source_fetch_offset"] >= p["mirror_log_end_offset"] for p in m["partitions"])


def _wait_caught_up(args, client: AdminClient, topic: str) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + args.wait_timeout
    show = not args.json and sys.stderr.isatty() or args.progress
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("records"), TimeElapsedColumn(), transient=False, disable=not show, console=None) as progress:
        task = progress.add_task(f"mirroring {topic}", total=None)
        while True:
            m = client.describe_mirror(topic)
            total = sum(max(p["source_high_watermark"], 0) for p in m["partitions"])
            done = sum(max(p["mirror_log_end_offset"], 0) for p in m["partitions"])
            progress.update(task, total=total or None, completed=min(done, total) if total else done)
            if m["mirror_status"] == "FAILED":
                raise AdminClientError(f"mirror {topic} failed: {m['mirror_topic_error']}: {m.get('mirror_topic_error_message')}")
            if _caught_up(m):
                return m
            if time.monotonic() > deadline:
                raise AdminClientError(f"mirror {topic} did not catch up within {args.wait_timeout:g}s (max lag {m['max_per_partition_mirror_lag']})")
            time.sleep(0.25)


def _mirror_list(args, client: AdminClient) -> int:
    mirrors = client.list_mirrors(args.link, args.mirror_status)
    _emit(args, mirrors, lambda d: _table(["MIRROR", "LINK", "SOURCE TOPIC", "STATUS", "ERROR", "PARTITIONS", "MAX LAG"], _mirror_rows(d)))
    return EXIT_OK


def _mirror_describe(args, client: AdminClient) -> int:
    m = client.describe_mirror(args.topic)

    def human(d):
        print(f"Mirror {d['mirror_topic_name']} of {d['source_topic_name']} over link {d['link_name']}")
        print(f"  status: {d['mirror_status']}   error: {d['mirror_topic_error']}" + (f" ({d['mirror_topic_error_message']})" if d.get("mirror_topic_error_message") else ""))
        # The cleaner's column only once compaction has run on the mirror (--json always has the field).
        cleaned = any(p.get("cleaned_up_to") is not None for p in d["mirror_lags"])
        _table(
            ["PARTITION", "MIRROR LOG END", "LAST SOURCE FETCH", "SOURCE HIGH WATERMARK", "LAG"] + (["CLEANED UP TO"] if cleaned else []),
            [[p["partition"], p["mirror_log_end_offset"], p["last_source_fetch_offset"], p["source_high_watermark"], _known(p["lag"])]
             + ([_known(p.get("cleaned_up_to"), "never")] if cleaned else []) for p in d["mirror_lags"]],
        )
        for gap in d.get("gaps") or []:
            print(f"  gap: partition {gap['partition']} offsets {gap['from_offset']}..{gap['to_offset'] - 1}: {gap['reason']}")
        if d.get("stop_info"):
            print(f"  stopped: {json.dumps(d['stop_info'])}")
        if d.get("stop_info", {}) and d["stop_info"].get("kind") == "failover":
            if d.get("lost_offsets") is None:
                print("  lost offsets: unknown until the source answers again")
            for lost in d.get("lost_offsets") or []:
                print(f"  lost offsets: partition {lost['partition']} [{lost['from']}, {lost['to']}) ({lost['offsets']} offsets)" + (f": {lost['note']}" if lost.get("note") else ""))

    _emit(args, m, human)
    return EXIT_OK


def _mirror_action(args, client: AdminClient) -> int:
    if bool(args.topics) == bool(args.pattern):
        raise AdminClientError(f"linkd mirror {args.action}: give TOPIC names or --pattern REGEX (one of them)")
    results = client.mirror_action(args.action, args.topics or None, timeout_s=getattr(args, "timeout", None), link=args.link,
                                   validate_only=args.dry_run, pattern=args.pattern)
    failed = [r for r in results if r["error_code"] != 0]

    def human(rows):
        if args.dry_run:
            print(f"dry run: nothing was changed; {args.action} would answer:")
        for r in rows:
            if r["error_code"]:
                print(f"{r['mirror_topic_name']}: {'WOULD FAIL' if args.dry_run else 'FAILED'} ({r['error_message']})")
                continue
            line = f"{r['mirror_topic_name']}: {'would be ' if args.dry_run else ''}{r.get('mirror_status', 'OK')}"
            if args.action in ("promote", "failover") and not args.dry_run:
                line += f", records possibly lost: {_known(r.get('records_possibly_lost'))}"
                aborted = r.get("aborted_transactions") or []
                if aborted:
                    line += f", {len(aborted)} open transaction(s) aborted"
            print(line)
            for p in r.get("stop_offsets") or []:
                print(_stop_line(p))

    _emit(args, results, human)
    if failed:
        print(f"linkd mirror {args.action}: {len(failed)} of {len(results)} topic(s) failed: " + "; ".join(f"{r['mirror_topic_name']}: {r['error_message']}" for r in failed), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _mirror_verify(args, client: AdminClient) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    described = client.describe_mirror(args.topic)
    partitions = [p["partition"] for p in described["mirror_lags"]]
    if args.partition is not None:
        if args.partition not in partitions:
            raise AdminClientError(f"mirror topic '{args.topic}' has no partition {args.partition}")
        partitions = [args.partition]
    show = (not args.json and sys.stderr.isatty()) or args.progress
    results = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[offsets]}"), DownloadColumn(), TimeElapsedColumn(), disable=not show, console=Console(stderr=True), transient=True) as progress:
        for partition in partitions:
            task = progress.add_task(f"verifying {args.topic}-{partition}", total=None, offsets="")
            step = client.verify_step(args.topic, partition, from_offset=args.from_offset)
            start, end = step["from_offset"], step["end_offset"]
            total = {"partition": partition, "from_offset": start, "end_offset": end, "batches": 0, "bytes": 0, "divergence": None}
            while True:
                total["batches"] += step["batches"]
                total["bytes"] += step["bytes"]
                total["next_offset"] = step["next_offset"]
                progress.update(task, completed=total["bytes"], total=None, offsets=f"offset {step['next_offset']} of {end}")
                if step["divergence"] or step["next_offset"] >= end:
                    total["divergence"] = step["divergence"]
                    break
                step = client.verify_step(args.topic, partition, from_offset=step["next_offset"], end_offset=end)
            total["identical"] = total["divergence"] is None
            results.append(total)
    report = {"mirror_topic_name": args.topic, "mirror_status": described["mirror_status"], "identical": all(r["identical"] for r in results), "partitions": results}

    def human(d):
        for r in d["partitions"]:
            span = f"offsets [{r['from_offset']}, {r['end_offset']})"
            if r["identical"]:
                print(f"{args.topic} partition {r['partition']}: identical, {r['batches']} batches, {r['bytes']} bytes, {span}")
                continue
            div = r["divergence"]
            crcs = ", ".join(f"{side} CRC {div[key]:#010x}" for side, key in (("source", "source_crc"), ("mirror", "mirror_crc")) if div[key] is not None)
            print(f"{args.topic} partition {r['partition']}: DIFFERS at offset {div['offset']} ({div['reason']}{'; ' + crcs if crcs else ''}); {r['batches']} batches, {r['bytes']} bytes identical before it")

    _emit(args, report, human)
    if not report["identical"]:
        bad = [r for r in results if not r["identical"]]
        print(f"linkd mirror verify: {args.topic} differs from its source in {len(bad)} partition(s), first at partition {bad[0]['partition']} offset {bad[0]['divergence']['offset']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _json_bytes(value: bytes | None):
    """Bytes in a JSON line: the text when they are UTF-8, else {"base64": ...}."""
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return {"base64": base64.b64encode(value).decode()}


def _mirror_lost_records(args, client: AdminClient) -> int:
    from protocol.errors import ProtocolError
    from protocol.records import decode_records, split_batches

    described = client.describe_mirror(args.topic)
    if (described.get("stop_info") or {}).get("kind") != "failover":
        raise AdminClientError(f"mirror topic '{args.topic}' was not failed over: nothing was lost")
    lost = described.get("lost_offsets")
    if lost is None:
        raise AdminClientError(f"the lost offsets of '{args.topic}' are unknown until its source answers again (see `linkd mirror describe {args.topic}`)")
    ranges = [x for x in lost if args.partition is None or x["partition"] == args.partition]
    if args.partition is not None and not ranges:
        raise AdminClientError(f"mirror topic '{args.topic}' has no partition {args.partition}")
    ranges = [x for x in ranges if x["offsets"] > 0]
    if not args.decode and len(ranges) > 1:
        raise AdminClientError(
            "raw batches do not say which partition they belong to: pass --partition (partitions with lost offsets: "
            + ", ".join(str(x["partition"]) for x in ranges) + ") or --decode"
        )
    output = Path(args.output)
    tmp = output.with_name(output.name + ".part")
    summary = []
    with tmp.open("wb") as out:
        for x in ranges:
            batches = records = size = 0
            reached = x["from"]
            pending = b""
            with client.lost_records(args.topic, x["partition"]) as response:
                for chunk in response.iter_bytes():
                    pending += chunk
                    split = split_batches(pending)
                    for batch in split.batches:
                        try:
                            batch.verify()
                        except ProtocolError as exc:
                            raise AdminClientError(f"partition {x['partition']}: corrupt batch at offset {batch.base_offset}: {exc}") from exc
                        batches += 1
                        size += batch.size
                        reached = batch.next_offset
                        if not args.decode:
                            out.write(batch.buffer)
                            records += batch.record_count
                        elif not batch.is_control:
                            for rec in decode_records(batch):
                                line = {
                                    "partition": x["partition"], "offset": rec.offset, "timestamp": rec.timestamp,
                                    "key": _json_bytes(rec.key), "value": _json_bytes(rec.value),
                                    "headers": [[k, _json_bytes(v)] for k, v in rec.headers],
                                    "producer_id": batch.producer_id, "transactional": batch.is_transactional,
                                }
                                out.write(json.dumps(line).encode() + b"\n")
                                records += 1
                    pending = pending[split.consumed :]
            if reached < x["to"] or pending:
                tmp.unlink(missing_ok=True)
                raise AdminClientError(f"partition {x['partition']}: the source's records ended at offset {reached}, short of the lost range [{x['from']}, {x['to']}); see the daemon log")
            summary.append({"partition": x["partition"], "from": x["from"], "to": x["to"], "batches": batches, "records": records, "bytes": size})
    tmp.replace(output)
    result = {"mirror_topic_name": args.topic, "output": str(output), "format": "json-lines" if args.decode else "record-batches", "partitions": summary}

    def human(d):
        if not d["partitions"]:
            print(f"{args.topic}: no lost offsets; wrote an empty {output}")
        for p in d["partitions"]:
            print(f"{args.topic} partition {p['partition']}: offsets [{p['from']}, {p['to']}): {p['records']} records written to {output}")

    _emit(args, result, human)
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------


def _add_serve_layers_and_admin_security(serve: argparse.ArgumentParser) -> None:
    """--config/--print-config (linkd.serveconfig) and the admin API security flags (linkd.admin.flags)."""
    from .admin import flags as admin_flags
    from .serveconfig import add_arguments

    add_arguments(serve)
    admin_flags.add_serve_arguments(serve)


def _settle_serve_settings(args: argparse.Namespace) -> int | None:
    """Fill the serve settings no flag gave from LINKD_* and --config; an exit status when serve should stop
    here (--print-config, or a bad setting), else None."""
    from .serveconfig import settle

    return settle(args.serve_parser, args)


def _admin_serve_config(args: argparse.Namespace) -> dict:
    from .admin import flags as admin_flags

    return admin_flags.serve_config(args)


def _add_standalone_commands(sub) -> None:
    """Commands that need no admin API client: ``admin-password`` and ``completion``."""
    from .admin import flags as admin_flags

    admin_flags.add_password_command(sub)
    p = sub.add_parser("completion", help="print a shell completion script: eval \"$(linkd completion bash)\"")
    p.add_argument("shell", choices=["bash", "zsh"], help="zsh uses the bash script through bashcompinit")
    p.set_defaults(func=_completion)


def _completion(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .completion import bash_script

    script = bash_script(parser)
    sys.stdout.write(script if args.shell == "bash" else "autoload -U +X bashcompinit && bashcompinit\n" + script)
    return EXIT_OK


class _Parser(argparse.ArgumentParser):
    """No prefix matching anywhere (``--bootstrap`` is not ``--bootstrap-server``): a runbook's typo fails
    instead of meaning something else. Subcommand parsers inherit the class."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.parsed_args: list[str] = []

    def error(self, message: str):
        """One line on stderr, like every other failure (argparse prints the whole usage first)."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see `{self.prog} --help`)\n")

    def parse_known_args(self, args=None, namespace=None):
        # Remembered so `linkd serve` can tell the flags given from defaults (linkd.serveconfig).
        self.parsed_args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="linkd", description="Byte-for-byte Kafka cluster-link daemon")
    parser.add_argument("--version", action="version", version=f"linkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_standalone_commands(sub)

    serve = sub.add_parser("serve", help="run the daemon")
    _add_serve_layers_and_admin_security(serve)
    serve.add_argument("--data-dir", default="./data", help="where partition logs and the control store live")
    _add_listener_arguments(serve)
    serve.add_argument("--admin", default=None, help="admin HTTP API HOST:PORT (default 127.0.0.1:8090)")
    serve.add_argument("--node-id", type=int, default=1)
    serve.add_argument("--log-level", default="info", type=str.lower, choices=list(LOG_LEVELS), help="debug, info, warning, error or critical (any case)")
    serve.add_argument("--log-format", default="text", type=str.lower, choices=list(LOG_FORMATS), help="text, or json: one JSON object a line")
    serve.add_argument("--ready-file", help="write {kafka_port, admin_port, pid, cluster_id} as JSON here once serving (useful with port 0)")
    serve.add_argument("--log-retention-check-interval-ms", type=int, default=30_000, metavar="MS", help="how often retention runs over every log (Kafka's log.retention.check.interval.ms)")
    serve.add_argument("--log-cleaner-backoff-ms", type=int, metavar="MS",
                       help="how long the log cleaner sleeps when no compacted partition needs cleaning (Kafka's log.cleaner.backoff.ms, default 15000)")
    serve.add_argument("--log-cleaner-dedupe-buffer-size", type=int, metavar="BYTES",
                       help="memory for the log cleaner's key map; one pass cleans as much of a log as it covers (Kafka's log.cleaner.dedupe.buffer.size, default 134217728)")
    from .broker.limits import add_serve_arguments

    add_serve_arguments(serve)
    serve.add_argument("--authorizer", choices=["none", "standard"], default="none",
                       help="'standard': authorize every request with Kafka's ACL model (StandardAuthorizer semantics; ACLs managed with kafka-acls). Default none: everyone may do everything")
    serve.add_argument("--super-users", metavar="User:a;User:b", help="principals allowed everything whatever the ACLs (Kafka's super.users); needs --authorizer standard")
    serve.add_argument("--allow-everyone-if-no-acl-found", action="store_true",
                       help="allow an action on a resource that has no ACL at all (Kafka's allow.everyone.if.no.acl.found; default: deny)")
    serve.add_argument("--transaction-max-timeout-ms", type=int, default=900_000, metavar="MS",
                       help="largest transaction.timeout.ms a transactional producer may ask for (Kafka's transaction.max.timeout.ms)")
    serve.add_argument("--transactional-id-expiration-ms", type=int, default=604_800_000, metavar="MS",
                       help="forget a transactional id unused this long (Kafka's transactional.id.expiration.ms)")
    serve.add_argument("--transaction-abort-timed-out-transaction-cleanup-interval-ms", type=int, default=10_000, metavar="MS",
                       help="how often transactions past their timeout are aborted (Kafka's setting of that name)")
    serve.add_argument("--secrets-key-file", help="file with the 32-byte key that encrypts link secrets in control.db (linkd secrets generate-key)")
    serve.set_defaults(func=_serve)

    _add_user_parser(sub)

    secrets = sub.add_parser("secrets", help="the key that encrypts link secrets at rest").add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    p = secrets.add_parser("generate-key", help="write a new random key to FILE (mode 0600)")
    p.add_argument("file")
    p.set_defaults(func=_secrets_generate)
    p = secrets.add_parser("rotate-key", help="re-encrypt every link's secrets under a new key (daemon stopped)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--key-file", help="the key the secrets are sealed with now (omit if none yet)")
    p.add_argument("--new-key-file", required=True)
    p.set_defaults(func=_secrets_rotate)

    common = _Parser(add_help=False)
    common.add_argument("--admin", help="daemon admin API HOST:PORT or https://HOST:PORT (default: $LINKD_ADMIN or 127.0.0.1:8090)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON (same as -o json)")
    common.add_argument("-o", "--output-format", choices=OUTPUT_FORMATS, help="human (default), json or yaml")
    common.add_argument("--admin-user", help="HTTP Basic user for the admin API (default $LINKD_ADMIN_USER); the password comes from $LINKD_ADMIN_PASSWORD")
    common.add_argument("--admin-ca-file", help="PEM CA to verify an https admin API (default $LINKD_ADMIN_CA)")
    common.add_argument("--admin-cert", help="PEM client certificate for an mTLS admin API (default $LINKD_ADMIN_CERT)")
    common.add_argument("--admin-key", help="PEM key of --admin-cert (default $LINKD_ADMIN_KEY)")

    link = sub.add_parser("link", help="manage cluster links").add_subparsers(dest="link_command", required=True, metavar="ACTION")
    p = link.add_parser("create", parents=[common], help="create a link to a source cluster")
    p.add_argument("name")
    p.add_argument("--bootstrap-server", help="source cluster HOST:PORT[,HOST:PORT]")
    p.add_argument("--config-file", help="link properties file (Kafka/Cluster Linking names)")
    p.add_argument("--config", action="append", metavar="KEY=VALUE", help="a link property; repeatable")
    p.add_argument("--no-validate", action="store_true", help="do not check that the source is reachable")
    p.set_defaults(func=_link_create)
    p = link.add_parser("list", parents=[common], help="list links")
    p.set_defaults(func=_link_list)
    p = link.add_parser("describe", parents=[common], help="describe a link")
    p.add_argument("name")
    p.set_defaults(func=_link_describe)
    p = link.add_parser("delete", parents=[common], help="delete a link")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="fail over the mirrors still using it, then delete it")
    p.set_defaults(func=_link_delete)
    p = link.add_parser("update", parents=[common], help="change a link's configs (applied without restarting it)")
    p.add_argument("name")
    p.add_argument("--config", action="append", metavar="KEY=VALUE", help="set a link property; repeatable")
    p.add_argument("--delete-config", action="append", metavar="KEY", help="reset a link property to its default; repeatable")
    p.set_defaults(func=_link_update)

    mirror = sub.add_parser("mirror", help="manage mirror topics").add_subparsers(dest="mirror_command", required=True, metavar="ACTION")
    p = mirror.add_parser("create", parents=[common], help="mirror a source topic")
    p.add_argument("topic")
    p.add_argument("--link", required=True)
    p.add_argument("--source-topic")
    p.add_argument("--wait", action="store_true", help="wait (with a progress bar) until the mirror has caught up")
    p.add_argument("--wait-timeout", type=float, default=600.0, help="seconds --wait waits at most")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.set_defaults(func=_mirror_create)
    p = mirror.add_parser("list", parents=[common], help="list mirror topics")
    p.add_argument("--link")
    p.add_argument("--mirror-status", help="only mirrors in this status (active, paused, stopped, pending_stopped, source_unavailable, failed)")
    p.set_defaults(func=_mirror_list)
    p = mirror.add_parser("describe", parents=[common], help="describe a mirror topic")
    p.add_argument("topic")
    p.set_defaults(func=_mirror_describe)
    for action, text in (("pause", "stop fetching"), ("resume", "fetch again"), ("promote", "catch up, then make writable (source must be reachable)"), ("failover", "make writable now (source may be gone)")):
        p = mirror.add_parser(action, parents=[common], help=text)
        p.add_argument("topics", nargs="*", metavar="TOPIC")
        p.add_argument("--pattern", metavar="REGEX", help="every mirror topic whose whole name matches REGEX (on --link, else on every link), instead of TOPIC names")
        p.add_argument("--link", help="refuse unless every TOPIC is a mirror on this link (a runbook's guard against the wrong mirror)")
        p.add_argument("--dry-run", action="store_true", help=f"show what {action} would answer for each topic and change nothing (REST validate_only)")
        if action == "promote":
            p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for lag 0 before giving up (default 60)")
        p.set_defaults(func=_mirror_action, action=action)

    p = mirror.add_parser("verify", parents=[common], help="compare the mirror with its source batch by batch (CRCs, offsets, lengths)")
    p.add_argument("topic")
    p.add_argument("--partition", type=int)
    p.add_argument("--from", dest="from_offset", type=int, help="first offset to compare (default: the first both sides hold)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    p.set_defaults(func=_mirror_verify)
    p = mirror.add_parser("lost-records", parents=[common], help="after a failover: fetch the records the mirror never got from the source")
    p.add_argument("topic")
    p.add_argument("--partition", type=int)
    p.add_argument("--output", required=True, help="file to write (record batches as the source stores them, or JSON lines with --decode)")
    p.add_argument("--decode", action="store_true", help="write one JSON object per record instead of raw batches")
    p.set_defaults(func=_mirror_lost_records)

    demo = sub.add_parser("demo", help="run the self-contained demo (or link a real SOURCE)")
    demo.add_argument("--bootstrap-server", help="a real source cluster; default: a throwaway local source")
    demo.add_argument("--topic", help="source topic to mirror (with --bootstrap-server)")
    demo.add_argument("--records", type=int, default=200_000)
    demo.add_argument("--keep-running", action="store_true", help="keep the destination daemon serving after the demo")
    demo.set_defaults(func=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("serve", "secrets", "user"):
        return args.func(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args)
    if args.command in ("admin-password", "completion"):
        return args.func(args, parser)
    if args.json:
        if args.output_format not in (None, "json"):
            parser.error(f"--json and -o {args.output_format} disagree")
        args.output_format = "json"
    args.json = (args.output_format or "human") != "human"  # machine output: no progress bars on stderr either
    what = f"linkd {args.command} {getattr(args, 'link_command', None) or getattr(args, 'mirror_command', '')}"
    try:
        client = AdminClient(args.admin, username=args.admin_user, ca=args.admin_ca_file, cert=args.admin_cert, key=args.admin_key)
    except (AdminClientError, OSError) as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return args.func(args, client)
    except AdminClientError as exc:
        print(f"{what}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
