"""A tiny TCP proxy that can cut the connections through it, for link fault tests.

``FaultProxy(target_port)`` listens on a free loopback port and pipes every accepted connection to the
target (which may be set later, through ``target``, when the proxied peer picks its port at start). ``cut()`` resets every open connection (both sides see the stream die mid-request);
``block()`` additionally refuses new connections until ``unblock()``, so a client that reconnects keeps
failing for as long as the test wants. ``blackhole()`` is the nastier fault: connections stay open and new
ones are accepted, but nothing gets through in either direction (requests just time out), as with a
dropped route; ``restore()`` ends it, cutting the connections whose streams lost bytes.
"""

from __future__ import annotations

import socket
import struct
import threading

from tests.peers import LOOPBACK, free_port


class FaultProxy:
    def __init__(self, target_port: int | None = None, target_host: str = LOOPBACK, port: int | None = None) -> None:
        self.target: tuple[str, int] | None = (target_host, target_port) if target_port else None
        self.port = port or free_port()
        self.blocked = False
        self.blackholed = False
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server((LOOPBACK, self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.blocked or self.target is None:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self.accepted += 1
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self.blackholed:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(src, dst)

    def _forget(self, *socks: socket.socket) -> None:
        for s in socks:
            with self._lock:
                self._open.discard(s)
            _reset(s)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def cut(self) -> int:
        """Reset every connection open right now; returns how many sockets were cut."""
        with self._lock:
            victims = list(self._open)
            self._open.clear()
        for s in victims:
            _reset(s)
        return len(victims)

    def block(self) -> None:
        self.blocked = True
        self.cut()

    def unblock(self) -> None:
        self.blocked = False

    def blackhole(self) -> None:
        self.blackholed = True

    def restore(self) -> None:
        self.blackholed = False
        self.cut()  # their streams are missing bytes: both ends must start over

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
        self._thread.join(2)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reset(sock: socket.socket) -> None:
    """Break the connection now, RST where possible: the peer sees it die, as with a network fault.

    ``shutdown`` first: a bare ``close`` does not take effect while our other pipe thread sits in
    ``recv`` on the same socket (the kernel keeps it open until that call returns)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
