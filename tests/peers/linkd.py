"""linkd itself as a peer: ``python -m linkd serve`` in a subprocess, on free loopback ports.

Tests that need a daemon use the ``linkd`` fixture (one per test) or ``linkd_factory`` (several, e.g. a
linkd mirroring from another linkd). The data directory survives ``stop()``/``kill()``, so crash-recovery
tests can ``kill()`` and ``start()`` the same instance.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import LOOPBACK, PeerStartError, kill, log_tail, port_accepts, register_for_exit, spawn, terminate, wait_until


class LinkdProcess:
    def __init__(
        self,
        data_dir: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="linkd-daemon-"))
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.log_path = self.workdir / "linkd.log"
        # Port 0 until started: the daemon binds free ports itself and reports them in its ready file, so
        # nothing else on the machine can take them between choosing and binding.
        self.port = 0
        self.admin_port = 0
        self.listener_ports: dict[str, int] = {}  # named listener -> bound port, from the ready file
        self.ready_file = self.workdir / "ready.json"
        self.extra_args = list(extra_args or [])
        self.env = env
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        register_for_exit(self)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def address(self, listener: str) -> str:
        """HOST:PORT of a named listener (``--listener NAME://127.0.0.1:0`` in ``extra_args``)."""
        return f"{LOOPBACK}:{self.listener_ports[listener]}"

    @property
    def admin_address(self) -> str:
        """HOST:PORT, as ``linkd --admin`` and ``LINKD_ADMIN`` take it."""
        return f"{LOOPBACK}:{self.admin_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "linkd",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listener",
            f"{LOOPBACK}:{self.port}",
            "--admin",
            f"{LOOPBACK}:{self.admin_port}",
            "--ready-file",
            str(self.ready_file),
            *self.extra_args,
        ]

    def start(self, on_spawn: Callable[[int], None] | None = None) -> LinkdProcess:
        """Spawn the daemon and wait for its ready file. ``on_spawn(pid)`` runs right after the spawn, before
        the wait (``benchmarks/restart.py`` attaches its profiler there, so the profile covers the start)."""
        if self.running:
            return self
        env = dict(os.environ)
        env.update(self.env or {})
        env["PYTHONUNBUFFERED"] = "1"
        self.ready_file.unlink(missing_ok=True)
        self.process = spawn(self.argv(), self.log_path, cwd=self.workdir, env=env)
        if on_spawn is not None:
            on_spawn(self.process.pid)
        try:
            wait_until(self._ready, self.start_timeout, interval=0.05, what=f"linkd on {self.bootstrap}")
        except (TimeoutError, PeerStartError) as exc:
            status = kill(self.process)
            self.process = None
            raise PeerStartError(f"linkd did not start ({exc}; exit status {status}):\n{log_tail(self.log_path)}") from exc
        return self

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise PeerStartError("linkd exited during startup")
        if not self.ready_file.exists():
            return False
        ports = json.loads(self.ready_file.read_text())
        # A restart keeps the ports of the first start, so clients and links pointed at it reconnect.
        self.port, self.admin_port = ports["kafka_port"], ports["admin_port"]
        self.listener_ports = ports.get("listeners", {})
        return port_accepts(self.port)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``."""
        status = terminate(self.process, timeout)
        self.process = None
        return status

    def kill(self) -> int | None:
        status = kill(self.process)
        self.process = None
        return status

    def restart(self) -> LinkdProcess:
        self.stop()
        return self.start()

    def cli(self, *args: str, timeout: float = 30.0, check: bool = False) -> subprocess.CompletedProcess:
        """Run ``linkd <args>`` against this daemon's admin API."""
        env = dict(os.environ, LINKD_ADMIN=self.admin_address)
        return subprocess.run([sys.executable, "-m", "linkd", *args], capture_output=True, text=True, timeout=timeout, env=env, check=check)

    def logs(self, lines: int = 80) -> str:
        return f"--- {self.log_path} ---\n{log_tail(self.log_path, lines)}"

    def close(self) -> None:
        """Stop and delete the working directory (unless LINKD_KEEP_PEERS is set).

        A data directory inside the working directory is deleted with it, so the daemon is killed rather
        than drained (a graceful stop costs about a second per daemon, hundreds of times a run); one the
        test chose (``data_dir=``) may be read or reused afterwards and gets the graceful stop."""
        keep = bool(os.environ.get("LINKD_KEEP_PEERS"))
        if not keep and self.data_dir.is_relative_to(self.workdir):
            self.kill()
        else:
            self.stop()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LinkdProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LinkdProcess({self.bootstrap}, admin={self.admin_address}, running={self.running})"
