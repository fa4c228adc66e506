"""One blocking socket speaking Kafka with linkd's own ``protocol`` codec, one request in flight.

Used where a benchmark must see exactly what a server answers, with no client library in between that
caches metadata, backs off or batches (the raw Fetch loop, and the end-offset watcher that times catch-ups).
"""

from __future__ import annotations

import socket
import struct
import time

from protocol.messages import RequestHeader, decode_response, encode_request


def parse_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "127.0.0.1", int(port)


class RawConnection:
    def __init__(self, bootstrap: str, client_id: str = "linkd-bench", timeout: float = 60.0) -> None:
        self._sock = socket.create_connection(parse_hostport(bootstrap), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client_id = client_id
        self._correlation = 0
        self._buffer = bytearray(0)
        # The last request's parts, seconds: this client's encode, the wait for the answer's last byte
        # (sending, the server's work, the transfer back), this client's decode.
        self.last_timing: dict[str, float] = {}

    def _receive_exact(self, size: int) -> memoryview:
        """``size`` bytes in the connection's one receive buffer (reused: fresh pages for every response cost
        this VM as much as the copy itself, and linkd recycles its buffers too). The view is valid until the
        next call; callers decode it and use the records before asking for more."""
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        view = memoryview(self._buffer)[:size]
        got = 0
        while got < size:
            n = self._sock.recv_into(view[got:], size - got)
            if n == 0:
                raise ConnectionError("peer closed the connection")
            got += n
        return view

    def request(self, api_key: int, version: int, body: dict, timeout: float | None = None) -> dict:
        if timeout is not None:
            self._sock.settimeout(timeout)
        self._correlation += 1
        began = time.perf_counter()
        frame = encode_request(RequestHeader(api_key, version, self._correlation, self._client_id), body)
        encoded = time.perf_counter()
        self._sock.sendall(frame)
        (size,) = struct.unpack(">i", self._receive_exact(4))
        answer = self._receive_exact(size)
        received = time.perf_counter()
        _, response = decode_response(api_key, version, answer)
        self.last_timing = {"encode_s": encoded - began, "wait_s": received - encoded, "decode_s": time.perf_counter() - received, "at": time.time()}
        return response

    def close(self) -> None:
        self._sock.close()
