"""A small trio Kafka client connection, enough for a link: version negotiation and request/response.

Requests on one connection are pipelined: a Kafka broker answers a connection's requests in the order
they came, so a task sends its request as soon as the one before it is *sent* and reads its answer once
the answer before it is read. Independent short requests (Metadata and DescribeConfigs for a new mirror,
ListOffsets for several partitions) then cost one round trip together across a WAN, not one each. A
fetcher still keeps one Fetch in flight on its own connection (a long poll would hold up everything
queued behind it); a link that wants several Fetches in flight to one source broker opens several
connections (``num.cluster.link.fetchers``).

A request whose answer is not read (cancelled, timed out, the stream broke) leaves the connection out of
step with the broker: it is closed then, and every request queued behind it fails as SourceUnavailable.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import socket
import ssl
from dataclasses import dataclass

import trio

from protocol import messages
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import API_SPECS, ApiKey, RequestHeader

from .clientsasl import sasl_exchange
from .decodememo import DecodeMemo
from .framebuffers import RECYCLE_MIN_FRAME, FrameBuffers
from .readturn import ReadTurn, turn_reader
from .security import SecuritySettings
from .sourceerrors import AuthenticationFailed, SourceProtocolError, SourceUnavailable, source_error
from .tlsstream import RCVLOWAT_MAX, TlsStream

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 30.0
# A Kafka broker refuses a re-authentication less than a second after the previous one began.
REAUTH_MIN_INTERVAL_S = 1.0
# The broker's session clock started before our answer arrived: count a session as over this much early
# (at most 4% of its lifetime, so the re-authentication due at 85-95% of it always comes first).
SESSION_END_MARGIN_S = 0.25
# Versions this client prefers at most: Fetch 12 keeps topic names in requests (no topic-id lookup) and
# still carries leader epochs and divergence; the rest are simply the newest we know.
PREFERRED_MAX = {ApiKey.FETCH: 12, ApiKey.METADATA: 12}



@dataclass
class Connection:
    host: str
    port: int
    stream: trio.SocketStream | TlsStream
    client_id: str
    max_frame: int
    versions: dict[int, tuple[int, int]]
    security: SecuritySettings | None = None
    read_turn: ReadTurn | None = None  # shared by the connections whose reads take turns (``readturn``)

    def __post_init__(self) -> None:
        self._send_lock = trio.Lock()  # one request's bytes at a time on the stream
        self._answered = trio.Event()  # set once the answer to the last request sent has been read
        self._answered.set()
        self.closed = False  # closed on purpose or out of step with the broker: never used again
        self._unread_versions: int | None = None  # correlation id of a pipelined ApiVersions not read yet
        self._correlation = itertools.count(1)
        self.buffers = FrameBuffers()
        self._rcvlowat = 1  # the socket's current SO_RCVLOWAT; 0 once the platform refused it
        self._reauth_at: float | None = None  # trio time to re-authenticate by (KIP-368), if the broker set a lifetime
        self._session_end: float | None = None  # trio time the broker's session ends (less our receive delay)
        self._session_lifetime_s = 0.0
        self.reauthentications = 0
        self.round_trip_s: float | None = None  # the least time any request on it took (see _round_trip_sample)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        client_id: str = "linkd",
        max_frame: int = 256 * 1024 * 1024,
        security: SecuritySettings | None = None,
        receive_buffer_bytes: int = -1,
        versions: dict[int, tuple[int, int]] | None = None,
        read_turn: ReadTurn | None = None,
    ) -> Connection:
        """Connect (TLS and SASL as ``security`` says). ``versions``: the API versions this broker
        announced on another connection a moment ago; this one then still sends ApiVersions (so the broker
        knows the client), but does not wait for the answer before the first request: that answer is read,
        and checked, ahead of the first request's."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
        except (OSError, trio.TooSlowError) as exc:
            raise SourceUnavailable(f"cannot connect to {host}:{port}: {exc}") from exc
        if receive_buffer_bytes > 0:
            # receive.buffer.bytes: a fixed SO_RCVBUF (the kernel caps it at net.core.rmem_max and stops
            # growing it). Left unset (-1), Linux grows it up to tcp_rmem's maximum as the path needs; the
            # window scale was agreed from that maximum at connect, so setting it now still takes effect.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
        conn = cls(host, port, stream, client_id, max_frame, {}, security, read_turn)
        try:
            if security is not None and security.tls:
                conn.stream = await conn._start_tls(stream)
            # Not under SASL (its handshake waits for answers anyway), nor from a v0 negotiation.
            if versions and versions.get(ApiKey.API_VERSIONS, (0, 0))[1] >= 3 and not (security is not None and security.sasl):
                await conn._negotiate_pipelined(versions)
            else:
                await conn._negotiate()
            if security is not None and security.sasl:
                await conn._authenticate()
        except BaseException:
            await conn.aclose()
            raise
        return conn

    async def _start_tls(self, transport: trio.SocketStream) -> TlsStream:
        assert self.security is not None and self.security.ssl_context is not None
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await TlsStream.wrap(transport, self.security.ssl_context, self.host)
        except trio.TooSlowError as exc:
            raise SourceUnavailable(f"TLS handshake with {self.host}:{self.port} timed out after {CONNECT_TIMEOUT_S}s") from exc
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationFailed("SSL_HANDSHAKE_FAILED", f"{self.host}:{self.port}: {exc.verify_message or exc}") from exc
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as exc:
            # Closed mid-handshake: a listener that is not TLS, or one that refused our certificate.
            raise AuthenticationFailed("SSL_HANDSHAKE_FAILED", f"{self.host}:{self.port} closed the connection during the TLS handshake ({exc})") from exc
        except ssl.SSLError as exc:
            raise AuthenticationFailed("SSL_HANDSHAKE_FAILED", f"{self.host}:{self.port}: {exc.reason or exc}") from exc
        except OSError as exc:
            raise AuthenticationFailed("SSL_HANDSHAKE_FAILED", f"{self.host}:{self.port} TLS handshake failed: {exc}") from exc
        log.debug("TLS with %s:%d: %s", self.host, self.port, stream.cipher())
        return stream

    async def _authenticate(self) -> None:
        """SaslHandshake v1 then SaslAuthenticate until the mechanism is done, as the Java client sends
        them (after ApiVersions). Also the KIP-368 re-authentication, on the same connection."""
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                await self._sasl_exchange()
        except trio.TooSlowError as exc:
            raise SourceUnavailable(f"SASL authentication with {self.host}:{self.port} timed out after {REQUEST_TIMEOUT_S}s") from exc

    async def _sasl_exchange(self) -> None:
        lifetime_ms = await sasl_exchange(self)
        # Re-authenticate well before the session expires (the Java client picks 85-95% of it), so a broker
        # enforcing connections.max.reauth.ms never closes a long-lived fetch connection under us; but not
        # within a second of the last time, which a Kafka broker refuses (ILLEGAL_SASL_STATE).
        delay = max(lifetime_ms / 1000 * random.uniform(0.85, 0.95), REAUTH_MIN_INTERVAL_S)
        now = trio.current_time()
        self._reauth_at = now + delay if lifetime_ms > 0 else None
        self._session_end = now + lifetime_ms / 1000 if lifetime_ms > 0 else None
        self._session_lifetime_s = lifetime_ms / 1000

    def session_expired(self) -> bool:
        """The broker's SASL session on this connection ended (it sat idle past its lifetime): the broker
        closes the connection at the next request, so it must not be used again."""
        if self._session_end is None:
            return False
        return trio.current_time() >= self._session_end - min(SESSION_END_MARGIN_S, self._session_lifetime_s * 0.04)

    async def _negotiate(self) -> None:
        # v3+ is flexible; older brokers answer a too-new ApiVersions in the v0 layout with their ranges.
        for version in (3, 0):
            sent = trio.current_time()
            body = await self._roundtrip(ApiKey.API_VERSIONS, version, {"client_software_name": "linkd", "client_software_version": "0.1.0"})
            self._round_trip_sample(trio.current_time() - sent)
            if body["error_code"] == ErrorCode.NONE:
                self.versions = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
                return
            if body["error_code"] != ErrorCode.UNSUPPORTED_VERSION:
                raise SourceProtocolError(f"{self.host}:{self.port} ApiVersions failed with {source_error(body['error_code']).name}")
        raise SourceProtocolError(f"{self.host}:{self.port} does not accept ApiVersions v0")

    async def _negotiate_pipelined(self, versions: dict[int, tuple[int, int]]) -> None:
        """ApiVersions v3 sent, its answer left to the first request (``_roundtrip``) to read first."""
        self.versions = dict(versions)
        correlation_id = next(self._correlation)
        header = RequestHeader(ApiKey.API_VERSIONS, 3, correlation_id, self.client_id)
        data = messages.encode_request(header, {"client_software_name": "linkd", "client_software_version": "0.1.0"})
        await self._guarded(self.stream.send_all(data))
        self._unread_versions = correlation_id

    async def _read_versions_answer(self) -> None:
        """The answer to a pipelined ApiVersions (see ``open``): it must agree that the versions assumed
        are offered, or the connection is given up (the broker changed under us; the next one negotiates)."""
        correlation_id, self._unread_versions = self._unread_versions, None
        if correlation_id is None:
            return
        body = self._decode(ApiKey.API_VERSIONS, 3, correlation_id, await self._guarded(self._next_frame()))
        if body["error_code"] != ErrorCode.NONE:
            raise SourceProtocolError(f"{self.host}:{self.port} refused the ApiVersions it accepted on another connection ({source_error(body['error_code']).name})")
        theirs = {k["api_key"]: (k["min_version"], k["max_version"]) for k in body["api_keys"]}
        if theirs != self.versions:
            raise SourceProtocolError(f"{self.host}:{self.port} now offers other API versions than on another connection a moment ago")

    def _round_trip_sample(self, seconds: float) -> None:
        # No answer comes back sooner than the path's round trip, however loaded either end is: the least
        # time any request took is an estimate of it that only gets better.
        self.round_trip_s = seconds if self.round_trip_s is None else min(self.round_trip_s, seconds)

    def version_for(self, api_key: int) -> int:
        theirs = self.versions.get(api_key)
        spec = API_SPECS[api_key]
        if theirs is None:
            raise SourceProtocolError(f"{self.host}:{self.port} does not support {ApiKey(api_key).name}")
        high = min(theirs[1], spec.max_version, PREFERRED_MAX.get(api_key, spec.max_version))
        if high < max(theirs[0], spec.min_version):
            raise SourceProtocolError(f"no common version of {ApiKey(api_key).name} with {self.host}:{self.port}")
        return high

    async def request(self, api_key: int, body: dict, version: int | None = None, timeout: float = REQUEST_TIMEOUT_S, memo: DecodeMemo | None = None) -> dict:
        version = self.version_for(api_key) if version is None else version
        try:
            with trio.fail_after(timeout):
                sent = trio.current_time()
                answer = await self._roundtrip(api_key, version, body, memo)
                self._round_trip_sample(trio.current_time() - sent)
                return answer
        except trio.TooSlowError as exc:
            await self.aclose()
            raise SourceUnavailable(f"{ApiKey(api_key).name} to {self.host}:{self.port} timed out after {timeout}s") from exc

    def _reauth_due(self, api_key: int, body: dict) -> bool:
        """Re-authenticate before this request when its time has come, or when a Fetch long poll sent now
        could still be waiting when the session ends: the next request would then find the session over and
        the connection would have to be opened again instead of re-authenticated."""
        if self._reauth_at is None:
            return False
        now = trio.current_time()
        if now >= self._reauth_at:
            return True
        if api_key != ApiKey.FETCH or self._session_end is None:
            return False
        wait_s = max(body.get("max_wait_ms", 0), 0) / 1000
        authenticated_at = self._session_end - self._session_lifetime_s
        ends_during_wait = now + wait_s >= self._session_end - min(SESSION_END_MARGIN_S, self._session_lifetime_s * 0.04)
        return ends_during_wait and now - authenticated_at >= REAUTH_MIN_INTERVAL_S

    async def _roundtrip(self, api_key: int, version: int, body: dict, memo: DecodeMemo | None = None) -> dict:
        """Send when the request before is sent, read when the answer before is read (see the module's
        docstring); a SASL re-authentication first waits until nothing is in flight."""
        async with self._send_lock:
            if self.closed:
                raise SourceUnavailable(f"connection to {self.host}:{self.port} was closed")
            if self.session_expired():
                raise SourceUnavailable(f"the SASL session with {self.host}:{self.port} expired while the connection was idle")
            if self._reauth_due(api_key, body):
                await self._exclusive(self._authenticate())
                self.reauthentications += 1
                log.info("re-authenticated with %s:%d (%s, session lifetime set by the broker)", self.host, self.port, self.security.mechanism if self.security else "?")
            correlation_id = next(self._correlation)
            data = messages.encode_request(RequestHeader(api_key, version, correlation_id, self.client_id), body)
            previous, mine = self._answered, trio.Event()
            self._answered = mine
            try:
                await self._guarded(self.stream.send_all(data))
            except BaseException:
                self._out_of_step()
                mine.set()
                raise
        try:
            await previous.wait()
            if self.closed:
                raise SourceUnavailable(f"connection to {self.host}:{self.port} was closed before its answer to {ApiKey(api_key).name} came")
            await self._read_versions_answer()
            frame = await self._guarded(self._next_frame())
        except BaseException:
            self._out_of_step()  # our answer is unread (or half read): what follows on the stream is not anyone's
            raise
        finally:
            mine.set()
        return self._decode(api_key, version, correlation_id, frame, memo)

    async def _exclusive(self, work) -> None:
        """Run ``work`` (a SASL exchange) with nothing else in flight; the caller holds the send lock."""
        try:
            await self._answered.wait()
            await work
        except BaseException:
            work.close()
            self._out_of_step()
            raise

    def _out_of_step(self) -> None:
        """Our stream no longer lines up with the broker's answers: close it (the next use reconnects)."""
        if self.closed:
            return
        self.closed = True
        if isinstance(self.stream, TlsStream):
            self.stream.close()
        else:
            self.stream.socket.close()  # trio's socket tells any task waiting on it

    async def _guarded(self, io):
        """Await a send or read of the stream, the network's failures as our errors."""
        try:
            return await io
        except ssl.SSLError as exc:
            if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                raise SourceUnavailable(f"connection to {self.host}:{self.port} broke: {exc}") from exc
            # TLS 1.3 finishes the client's handshake before the server judges its certificate: a
            # refused (or missing) client certificate arrives as an alert on the first read.
            raise AuthenticationFailed("SSL_HANDSHAKE_FAILED", f"{self.host}:{self.port}: {exc.reason or exc}") from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise SourceUnavailable(f"connection to {self.host}:{self.port} broke: {exc}") from exc

    def _decode(self, api_key: int, version: int, correlation_id: int, frame: memoryview, memo: DecodeMemo | None = None) -> dict:
        if memo is not None and len(frame) >= 4 and messages.peek_correlation_id(frame) == correlation_id:
            kept = memo.lookup(api_key, version, frame)
            if kept is not None:
                return kept  # the same bytes as the last answer: the same answer (decodememo.py)
        try:
            got, response = messages.decode_response(api_key, version, frame, lenient=True)  # liberal in what peers send
        except ProtocolError as exc:
            raise SourceProtocolError(f"undecodable {ApiKey(api_key).name} v{version} response from {self.host}:{self.port}: {exc}") from exc
        if got != correlation_id:
            raise SourceProtocolError(f"{self.host}:{self.port} answered correlation id {got}, expected {correlation_id}")
        if memo is not None:
            memo.keep(api_key, version, frame, response)
        return response

    async def _exchange(self, api_key: int, version: int, body: dict) -> dict:
        """One request and its response with nothing else in flight: connecting (ApiVersions, SASL) and
        re-authenticating (the caller holds the send lock and waited for every answer)."""
        correlation_id = next(self._correlation)
        data = messages.encode_request(RequestHeader(api_key, version, correlation_id, self.client_id), body)
        await self._guarded(self.stream.send_all(data))
        return self._decode(api_key, version, correlation_id, await self._guarded(self._next_frame()))

    async def _next_frame(self) -> memoryview:
        """Read one response frame straight into a buffer of its final size.

        Only the task whose turn it is reads, and answers come in the order of the requests, so the next
        bytes on the socket are our response's: reading exactly one frame needs no buffering layer, and a large Fetch response is
        copied from the kernel once, into the memory it is decoded (and appended) from — a recycled
        buffer for large frames (``FrameBuffers``).
        """
        header = bytearray(4)
        await self._read_exactly(memoryview(header))
        size = int.from_bytes(header, "big", signed=True)
        if size < 0 or size > self.max_frame:
            raise SourceProtocolError(f"{self.host}:{self.port} sent a frame of {size} bytes (limit {self.max_frame})")
        if size >= RECYCLE_MIN_FRAME:
            frame = self.buffers.frame(size)
        else:
            # A small answer: caught up (or idle), so the large buffers a catch-up left are let go, and
            # a caught-up link holds no more memory per connection than it asks for.
            self.buffers.release()
            frame = memoryview(bytearray(size))
        await self._read_exactly(frame)
        return frame

    async def _read_exactly(self, view: memoryview) -> None:
        """Fill ``view`` from the socket. Reads go straight to the non-blocking descriptor and the task
        parks only when the socket is drained: a multi-megabyte frame arrives in hundreds of reads, and
        passing each through the scheduler (two checkpoints per ``trio`` socket call) cost more CPU than
        the copies themselves. It still hands the loop back every MiB and takes turns with the link's other
        fetch connections (``readturn``): a fetcher whose answer is whole gets on meanwhile."""
        if isinstance(self.stream, TlsStream):
            await self.stream.read_exactly(view, turn_reader(self.read_turn))
            return
        sock = self.stream.socket
        fd = sock.fileno()
        await trio.lowlevel.checkpoint_if_cancelled()
        turn = turn_reader(self.read_turn)
        try:
            while view:
                await turn.before_read()
                try:
                    received = os.readv(fd, [view])
                except BlockingIOError:
                    turn.parking()
                    self._wake_after(sock, min(len(view), RCVLOWAT_MAX))
                    await trio.lowlevel.wait_readable(sock)
                    continue
                if not received:
                    raise SourceUnavailable(f"{self.host}:{self.port} closed the connection")
                view = view[received:]
                if view:
                    await turn.copied(received)
        finally:
            turn.finish()

    def _wake_after(self, sock, wanted: int) -> None:
        """Make the socket readable only once ``wanted`` bytes are queued (or it closed). Never more than
        the rest of the frame, so the last bytes always wake us; the kernel caps it to what fits."""
        if self._rcvlowat and wanted != self._rcvlowat:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
                self._rcvlowat = wanted
            except (OSError, AttributeError):
                self._rcvlowat = 0  # not settable here: wake on every arrival, as before

    async def aclose(self) -> None:
        self.closed = True
        with trio.CancelScope(shield=True):
            if isinstance(self.stream, TlsStream):
                self.stream.close()
            else:
                await self.stream.aclose()
