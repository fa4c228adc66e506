"""Module boundaries from the style guide: protocol/ is sans-IO and storage/ knows nothing of the network."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = {
    "protocol": {"linkd", "trio", "socket", "asyncio", "selectors", "httpx", "starlette", "hypercorn"},
    "linkd/storage": {"trio", "socket", "asyncio", "linkd.broker", "linkd.link", "linkd.admin", "httpx", "starlette"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level >= 2 and "linkd/storage" in str(path.parent.relative_to(ROOT)):
            names.add("linkd." + (node.module or ""))  # storage reaching up into a sibling package
    return names


@pytest.mark.parametrize("package", sorted(RULES))
def test_package_does_not_import_forbidden_modules(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == banned or name.startswith(banned + ".") for banned in RULES[package]):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


# PartitionLog methods that block (disk I/O, the log's writer lock). The Kafka listener runs on the event
# loop, so it hands them to linkd.storage_calls.call (passing the bound method) and never calls one itself.
BLOCKING_LOG_METHODS = {"append_assigned", "append_mirrored", "truncate_to", "reset_to", "advance_log_start", "apply_retention", "flush"}


def test_the_kafka_listener_calls_no_blocking_storage_method_on_the_event_loop():
    offenders = []
    for path in sorted((ROOT / "linkd/broker").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in BLOCKING_LOG_METHODS:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} calls .{node.func.attr}()")
                elif node.func.attr == "run_sync" and isinstance(node.func.value, ast.Attribute) and node.func.value.attr == "to_thread":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} starts its own worker thread (use linkd.storage_calls)")
    assert not offenders, "\n".join(offenders)


# Everything below runs on the event loop. Inside an ``async def`` (not in a sync function nested in it,
# which may be a worker thread's body) a blocking log writer is handed to linkd.storage_calls, never called,
# and worker threads are started only through linkd.storage_calls. Allowed elsewhere, with the reason:
LOOP_CODE = ["linkd/broker", "linkd/link", "linkd/groups", "linkd/txn", "linkd/admin", "linkd/maintenance.py", "linkd/topics.py", "linkd/daemon.py"]
BLOCKING_LOG_WRITERS = BLOCKING_LOG_METHODS | {"update_config", "cleaner_snapshot", "swap_in_cleaned", "mark_cleaned"}
OWN_WORKER_THREADS = {
    "linkd/link/fetcher.py": "the append pipeline: one thread job appends a round's slices to many logs, ordered by the fetcher, "
                             "the only writer of a mirror's data",
    "linkd/admin/security.py": "a password check (CPU, no storage)",
}
# The registry's sync methods that make or close logs on the calling thread (tests, startup, shutdown).
BLOCKING_REGISTRY_METHODS = {"create", "add_partitions", "load", "close"}
AT_STARTUP = {("linkd/daemon.py", "load")}  # opening every log before the first listener or task starts


def _async_body_calls(tree: ast.AST):
    """Every call made directly in the body of an ``async def`` (not inside a nested def or lambda)."""
    def walk(node, in_async):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.AsyncFunctionDef):
                yield from walk(child, True)
            elif isinstance(child, (ast.FunctionDef, ast.Lambda, ast.ClassDef)):
                yield from walk(child, False)
            else:
                if in_async and isinstance(child, ast.Call):
                    yield child
                yield from walk(child, in_async)
    yield from walk(tree, False)


def _loop_modules():
    for entry in LOOP_CODE:
        path = ROOT / entry
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def test_event_loop_code_hands_every_blocking_storage_call_to_storage_calls():
    offenders = []
    for path in _loop_modules():
        rel = str(path.relative_to(ROOT))
        for call in _async_body_calls(ast.parse(path.read_text(), rel)):
            func = call.func
            if not isinstance(func, ast.Attribute):
                continue
            if func.attr in BLOCKING_LOG_WRITERS:
                offenders.append(f"{rel}:{call.lineno} calls .{func.attr}() on the event loop")
            elif func.attr == "run_sync" and isinstance(func.value, ast.Attribute) and func.value.attr == "to_thread" and rel not in OWN_WORKER_THREADS:
                offenders.append(f"{rel}:{call.lineno} starts its own worker thread (use linkd.storage_calls)")
            elif func.attr in BLOCKING_REGISTRY_METHODS and isinstance(func.value, (ast.Name, ast.Attribute)) \
                    and (func.value.id if isinstance(func.value, ast.Name) else func.value.attr) in ("topics", "registry", "_topics") \
                    and (rel, func.attr) not in AT_STARTUP:
                offenders.append(f"{rel}:{call.lineno} calls the registry's blocking .{func.attr}() (use its async form)")
    assert not offenders, "\n".join(offenders)


# The link's sans-IO core: decisions a test reaches without a socket. From the connection code they may
# take only its error types; nothing that does I/O.
LINK_CORE = ["linkd/link/wire.py", "linkd/link/partition.py", "linkd/link/validation.py", "linkd/link/assignment.py"]
CORE_BANNED_MODULES = {"trio", "socket", "asyncio", "selectors", "threading", "linkd.link.fetcher", "linkd.link.runtime", "linkd.link.source", "linkd.link.sourceends", "linkd.storage_calls"}
CLIENT_NAMES_ALLOWED = {"SourceProtocolError", "SourceUnavailable", "source_error"}


def _resolved_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) for every import of ``path``, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            out.append((module, [alias.name for alias in node.names]))
    return out


@pytest.mark.parametrize("module", LINK_CORE)
def test_the_link_core_does_no_io(module):
    offenders = []
    for name, names in _resolved_imports(ROOT / module):
        if any(name == banned or name.startswith(banned + ".") for banned in CORE_BANNED_MODULES):
            offenders.append(f"{module} imports {name}")
        if name == "linkd.link.client" and set(names) - CLIENT_NAMES_ALLOWED:
            offenders.append(f"{module} imports {sorted(set(names) - CLIENT_NAMES_ALLOWED)} from the connection code")
    assert not offenders, "\n".join(offenders)


def test_the_link_domain_knows_no_http():
    offenders = []
    for path in sorted((ROOT / "linkd/link").rglob("*.py")):
        for name, _names in _resolved_imports(path):
            if name.startswith(("linkd.admin", "starlette", "hypercorn")):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_admin_api_uses_no_private_member_of_the_manager():
    offenders = []
    for path in sorted((ROOT / "linkd/admin").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if isinstance(node.value, ast.Name) and node.value.id in ("manager", "links"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)


# Small modules with one job: none in linkd/link/ grows past ~400 lines.
MAX_LINK_MODULE_LINES = 410


def test_no_link_module_is_over_about_400_lines():
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for path in sorted((ROOT / "linkd/link").glob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_LINK_MODULE_LINES
    ]
    assert not long, "\n".join(long)
