"""The ``linkd`` command line: ``serve`` runs the daemon; ``link`` and ``mirror`` talk to its admin API.

Every client command takes ``--json`` (machine-readable output for runbooks) and exits 0 on success, or
non-zero with a one-line reason on stderr. The daemon's address comes from ``--admin``, then the
``LINKD_ADMIN`` environment variable, then 127.0.0.1:8090.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .adminclient import AdminClient, AdminClientError

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
    import trio

    from .broker.limits import limits_from_args
    from .daemon import DataDirInUse, ServeConfig, parse_hostport, serve
    from .storage.cleaner import CleanerConfig

    try:
        given = {"dedupe_buffer_size": args.log_cleaner_dedupe_buffer_size, "backoff_ms": args.log_cleaner_backoff_ms}
        cleaner = CleanerConfig(**{k: v for k, v in given.items() if v is not None})
        config = ServeConfig(
            data_dir=Path(args.data_dir),
            listener=parse_hostport(args.listener, "--listener"),
            advertised=parse_hostport(args.advertised_listener, "--advertised-listener") if args.advertised_listener else None,
            admin=parse_hostport(args.admin or "127.0.0.1:8090", "--admin"),
            node_id=args.node_id,
            ready_file=Path(args.ready_file) if args.ready_file else None,
            retention_check_interval_ms=args.log_retention_check_interval_ms,
            cleaner=cleaner,
            limits=limits_from_args(args),
            secrets_key_file=Path(args.secrets_key_file) if args.secrets_key_file else None,
            transactions=_txn_config(args),
        )
        if config.secrets_key_file:
            from .link.secrets import SecretsKey

            SecretsKey.from_file(config.secrets_key_file)  # a bad key file stops the daemon here, with its reason
    except ValueError as exc:
        print(f"linkd serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(serve, config)
    except DataDirInUse as exc:
        print(f"linkd serve: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BaseExceptionGroup as group:
        startup, rest = group.split(OSError)
        if startup is None or rest is not None:
            raise
        for exc in _leaves(startup):
            print(f"linkd serve: {exc.strerror or exc} (listener {args.listener}, admin {args.admin}, data dir {args.data_dir})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


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


def _emit(args: argparse.Namespace, data, human) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=False))
    else:
        human(data)


def _table(columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*[str(c) for c in row])
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
    mirrors = client.list_mirrors(args.link)
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
    results = client.mirror_action(args.action, args.topics, timeout_s=getattr(args, "timeout", None))
    failed = [r for r in results if r["error_code"] != 0]

    def human(rows):
        for r in rows:
            if r["error_code"]:
                print(f"{r['mirror_topic_name']}: FAILED ({r['error_message']})")
                continue
            line = f"{r['mirror_topic_name']}: {r.get('mirror_status', 'OK')}"
            if args.action in ("promote", "failover"):
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkd", description="Byte-for-byte Kafka cluster-link daemon")
    parser.add_argument("--version", action="version", version=f"linkd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument("--data-dir", default="./data", help="where partition logs and the control store live")
    serve.add_argument("--listener", default="127.0.0.1:9092", help="Kafka listener HOST:PORT")
    serve.add_argument("--advertised-listener", help="HOST:PORT clients are told to connect to")
    serve.add_argument("--admin", default=None, help="admin HTTP API HOST:PORT (default 127.0.0.1:8090)")
    serve.add_argument("--node-id", type=int, default=1)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--ready-file", help="write {kafka_port, admin_port, pid, cluster_id} as JSON here once serving (useful with port 0)")
    serve.add_argument("--log-retention-check-interval-ms", type=int, default=30_000, metavar="MS", help="how often retention runs over every log (Kafka's log.retention.check.interval.ms)")
    serve.add_argument("--log-cleaner-backoff-ms", type=int, metavar="MS",
                       help="how long the log cleaner sleeps when no compacted partition needs cleaning (Kafka's log.cleaner.backoff.ms, default 15000)")
    serve.add_argument("--log-cleaner-dedupe-buffer-size", type=int, metavar="BYTES",
                       help="memory for the log cleaner's key map; one pass cleans as much of a log as it covers (Kafka's log.cleaner.dedupe.buffer.size, default 134217728)")
    from .broker.limits import add_serve_arguments

    add_serve_arguments(serve)
    serve.add_argument("--transaction-max-timeout-ms", type=int, default=900_000, metavar="MS",
                       help="largest transaction.timeout.ms a transactional producer may ask for (Kafka's transaction.max.timeout.ms)")
    serve.add_argument("--transactional-id-expiration-ms", type=int, default=604_800_000, metavar="MS",
                       help="forget a transactional id unused this long (Kafka's transactional.id.expiration.ms)")
    serve.add_argument("--transaction-abort-timed-out-transaction-cleanup-interval-ms", type=int, default=10_000, metavar="MS",
                       help="how often transactions past their timeout are aborted (Kafka's setting of that name)")
    serve.add_argument("--secrets-key-file", help="file with the 32-byte key that encrypts link secrets in control.db (linkd secrets generate-key)")
    serve.set_defaults(func=_serve)

    secrets = sub.add_parser("secrets", help="the key that encrypts link secrets at rest").add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    p = secrets.add_parser("generate-key", help="write a new random key to FILE (mode 0600)")
    p.add_argument("file")
    p.set_defaults(func=_secrets_generate)
    p = secrets.add_parser("rotate-key", help="re-encrypt every link's secrets under a new key (daemon stopped)")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--key-file", help="the key the secrets are sealed with now (omit if none yet)")
    p.add_argument("--new-key-file", required=True)
    p.set_defaults(func=_secrets_rotate)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--admin", help="daemon admin API HOST:PORT (default: $LINKD_ADMIN or 127.0.0.1:8090)")
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")

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
    p.set_defaults(func=_mirror_list)
    p = mirror.add_parser("describe", parents=[common], help="describe a mirror topic")
    p.add_argument("topic")
    p.set_defaults(func=_mirror_describe)
    for action, text in (("pause", "stop fetching"), ("resume", "fetch again"), ("promote", "catch up, then make writable (source must be reachable)"), ("failover", "make writable now (source may be gone)")):
        p = mirror.add_parser(action, parents=[common], help=text)
        p.add_argument("topics", nargs="+", metavar="TOPIC")
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
    if args.command in ("serve", "secrets"):
        return args.func(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args)
    client = AdminClient(args.admin)
    try:
        return args.func(args, client)
    except AdminClientError as exc:
        print(f"linkd {args.command} {getattr(args, 'link_command', None) or getattr(args, 'mirror_command', '')}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
