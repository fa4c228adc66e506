"""Real peers for integration tests: Apache Kafka, Tansu, the Java client, linkd itself.

Every process started here binds 127.0.0.1 only, lives in its own temporary directory and is stopped by
its owner, by an ``atexit`` hook, and (on Linux) by the kernel when the test process dies, so a crashed
pytest run never leaves a broker behind on a machine shared with other engineers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import subprocess
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"


class PeerUnavailable(RuntimeError):
    """A peer cannot run on this machine (no JDK, no Maven, no binary). Fixtures turn this into a skip,
    or into a failure under CI, where every peer is expected to be present."""


class PeerStartError(RuntimeError):
    """A peer was available but did not come up; the message carries the tail of its log."""


def cache_root() -> Path:
    """Where downloaded jars and compiled classes live, outside the repository and reused across runs."""
    root = Path(os.environ.get("LINKD_PEERS_CACHE") or Path.home() / ".cache" / "linkd-peers")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between test sessions sharing the cache (several engineers share one machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def free_port() -> int:
    """A loopback port the kernel considers free right now. Another process may take it before we bind;
    starters that can detect that (the Kafka broker) retry with fresh ports."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; return that value or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout:.1f}s")
        time.sleep(interval)


def log_tail(path: Path | str, lines: int = 60) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # If pytest is killed (timeout -s KILL, OOM, a closed terminal) its atexit hooks never run; the kernel
    # then delivers SIGTERM to the child so that no broker outlives the session.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def spawn(argv: list[str], log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a peer process with stdout and stderr appended to ``log_path`` and tied to our lifetime."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n--- {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            preexec_fn=_die_with_parent if os.name == "posix" else None,
        )


def terminate(process: subprocess.Popen | None, grace: float) -> int | None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit status."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return process.returncode


def kill(process: subprocess.Popen | None) -> int | None:
    if process is None:
        return None
    if process.poll() is None:
        process.kill()
        process.wait(10)
    return process.returncode


# Peers register here so that an interpreter exiting normally (including after a failed fixture) stops them.
_live_peers: weakref.WeakSet = weakref.WeakSet()


def register_for_exit(peer) -> None:
    _live_peers.add(peer)


@atexit.register
def _stop_all_peers() -> None:
    for peer in list(_live_peers):
        with contextlib.suppress(Exception):
            peer.close()
