"""A TCP proxy that counts round trips: how many times a client had to wait for an answer.

``RoundTripProxy(target)`` forwards every request to the broker at once but holds the broker's answers
back until no new bytes have come from any client or the broker for ``quiet_s``; then it releases all
it holds together and counts one round trip. Requests a client sends together (on several connections,
or pipelined on one) are answered in the same round; a request sent only after another's answer arrived
lands in a later one. So the round a request arrives in is the number of round trips its sender waited
for before sending it, as across a WAN whose round trip dwarfs everything else, and the count does not
depend on how fast either side is (only on none of them pausing longer than ``quiet_s`` mid-burst).

``requests`` lists (round, connection number, api key) for every request frame clients sent; ``rounds``
is the number of releases so far. Connections are counted in ``accepted``.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from tests.peers import LOOPBACK, free_port


class RoundTripProxy:
    def __init__(self, target: tuple[str, int] | None = None, port: int | None = None, quiet_s: float = 0.4) -> None:
        self.target = target
        self.port = port or free_port()
        self.quiet_s = quiet_s
        self.rounds = 0
        self.accepted = 0
        self.requests: list[tuple[int, int, int]] = []
        self._lock = threading.Lock()
        self._held: list[tuple[socket.socket, bytes]] = []
        self._last_activity = time.monotonic()
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._listener = socket.create_server((LOOPBACK, self.port))
        self._listener.settimeout(0.2)
        for target_fn in (self._accept_loop, self._gate_loop):
            threading.Thread(target=target_fn, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def api_keys_in_round(self, round_: int) -> list[int]:
        with self._lock:
            return [key for r, _c, key in self.requests if r == round_]

    def api_keys_in_all_rounds(self) -> list[int]:
        with self._lock:
            return [key for _r, _c, key in self.requests]

    def first_round_of(self, api_key: int, after: int = 0) -> int | None:
        """The round in which the first request of ``api_key`` arrived at or after round ``after``."""
        with self._lock:
            return next((r for r, _c, key in self.requests if key == api_key and r >= after), None)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            assert self.target is not None
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
            with self._lock:
                self.accepted += 1
                number = self.accepted
                self._sockets += [client, upstream]
                self._last_activity = time.monotonic()
            threading.Thread(target=self._requests, args=(client, upstream, number), daemon=True).start()
            threading.Thread(target=self._answers, args=(upstream, client), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, number: int) -> None:
        pending = b""
        try:
            while data := client.recv(1 << 16):
                pending += data
                with self._lock:
                    self._last_activity = time.monotonic()
                    while len(pending) >= 6:
                        (size,) = struct.unpack(">i", pending[:4])
                        if len(pending) < 4 + size:
                            break
                        (api_key,) = struct.unpack(">h", pending[4:6])
                        self.requests.append((self.rounds, number, api_key))
                        pending = pending[4 + size :]
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            _close(upstream)

    def _answers(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while data := upstream.recv(1 << 16):
                with self._lock:
                    self._held.append((client, data))
                    self._last_activity = time.monotonic()
        except OSError:
            pass
        finally:
            with self._lock:
                self._held.append((client, b""))  # closes it in order, after what it was sent before

    def _gate_loop(self) -> None:
        while not self._closed:
            time.sleep(0.01)
            with self._lock:
                if not self._held or time.monotonic() - self._last_activity < self.quiet_s:
                    continue
                held, self._held = self._held, []
                self.rounds += 1
            for client, data in held:
                try:
                    if data:
                        client.sendall(data)
                    else:
                        _close(client)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            _close(s)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
