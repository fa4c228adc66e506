"""TLS to a source broker on the connection's own socket: the link client's fast TLS read path."""

from __future__ import annotations

import socket
import ssl
from typing import cast

import trio

from .readturn import TurnReader
from .sourceerrors import SourceUnavailable

# While a frame is incomplete the socket wakes the reader only once this much more of it has arrived
# (SO_RCVLOWAT). A response is used only whole, so waking for every piece that lands (an 8 MiB Fetch
# response arrives in dozens) bought nothing and cost a pass through the event loop each: catch-up ran
# ~20% faster without them. Kafka's own replica fetcher reads with a 64 KiB socket buffer; 1 MiB is
# far from limiting a long-distance link.
RCVLOWAT_MAX = 1 << 20
# Largest piece of ciphertext read from a TLS connection's socket at once (see TlsStream). SO_RCVBUF is
# left alone: Linux grows the receive buffer itself (to tcp_rmem's maximum, 32 MiB here), where setting
# it turns that off and caps it at rmem_max (4 MiB here).
TLS_READ_MAX = 1 << 20
# Largest TLS record on the wire: 16 KiB of plaintext plus header, padding and tag (RFC 8446 5.2).
TLS_RECORD_MAX = 5 + (1 << 14) + 256


class TlsStream:
    """TLS on the connection's own non-blocking socket, with the standard library's ``ssl.SSLObject``.

    Ciphertext is read from the descriptor in big pieces (up to TLS_READ_MAX at once, the task parking
    only when the socket is drained) and handed to OpenSSL's memory BIO; OpenSSL then decrypts record
    after record straight into the caller's buffer (``SSLObject.read`` into a view of the response
    frame), so a large Fetch response passes through no Python object on its way in. The socket wakes
    the reader only once most of the rest of the frame has arrived (SO_RCVLOWAT, as for PLAINTEXT).

    Measured (benchmarks/tls_reads.py, from a local TLS sender): trio's ``SSLStream`` spent ~2 CPU s
    per GB received, this ~0.9 (a third of it AES-256-GCM itself); an ``ssl.SSLSocket`` on the descriptor (tried) a little more, as OpenSSL then
    reads each 16 KiB record's header and body with a system call each. No private attributes are used.
    """

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, peer: str) -> None:
        self.socket = sock
        self._tls = tls
        self._incoming = incoming
        self._outgoing = outgoing
        self.peer = peer
        self._scratch = bytearray(TLS_READ_MAX)
        self._unsent = memoryview(b"")  # ciphertext taken from OpenSSL and not yet on the socket
        self._rcvlowat = 1  # the socket's current SO_RCVLOWAT; 0 once the platform refused it
        # A request may be sent while another task reads an answer (the client pipelines), and a read may
        # need to send too (a KeyUpdate's answer): one sender of ciphertext at a time.
        self._sending = trio.Lock()

    @classmethod
    async def wrap(cls, transport: trio.SocketStream, context: ssl.SSLContext, server_hostname: str) -> TlsStream:
        """Take over ``transport``'s descriptor and run the client handshake on it (certificate and
        hostname checks as ``context`` says). Raises ``ssl.SSLError``/``OSError`` as the handshake
        fails; the caller times it."""
        sock = socket.socket(fileno=transport.socket.detach())
        try:
            sock.setblocking(False)
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
            stream = cls(sock, tls, incoming, outgoing, f"{server_hostname}:{sock.getpeername()[1]}")
        except BaseException:
            sock.close()
            raise
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await stream._flush()
                    await stream._fill(1)
            await stream._flush()
        except BaseException:
            stream.close()
            raise
        return stream

    async def _flush(self) -> None:
        """Send what OpenSSL has written (records, handshake and post-handshake messages). What is not
        sent yet stays in ``_unsent``, so a send cancelled halfway never leaves half a record behind: the
        next one sends the rest first."""
        async with self._sending:
            await self._flush_unsent()

    async def _flush_unsent(self) -> None:
        if self._outgoing.pending:
            self._unsent = memoryview(bytes(self._unsent) + self._outgoing.read()) if self._unsent else memoryview(self._outgoing.read())
        while self._unsent:
            try:
                self._unsent = self._unsent[self.socket.send(self._unsent) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.socket)

    async def _fill(self, wanted: int) -> None:
        """Hand OpenSSL the next ciphertext the socket has (an end of stream once it closed); when it has
        none, wait until about ``wanted`` bytes are there."""
        while True:
            try:
                got = self.socket.recv_into(self._scratch)
            except BlockingIOError:
                self._wake_after(min(max(wanted, 1), RCVLOWAT_MAX))
                await trio.lowlevel.wait_readable(self.socket)
                continue
            if got:
                self._incoming.write(memoryview(self._scratch)[:got])
            else:
                self._incoming.write_eof()
            return

    def _wake_after(self, wanted: int) -> None:
        if self._rcvlowat and wanted != self._rcvlowat:
            try:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)
                self._rcvlowat = wanted
            except (OSError, AttributeError):
                self._rcvlowat = 0  # not settable here: wake on every arrival

    def cipher(self) -> tuple[str, str, int] | None:
        """(cipher suite, protocol version, secret bits) the handshake agreed on."""
        return self._tls.cipher()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._tls.write(data)
        await self._flush()

    async def read_exactly(self, view: memoryview, turn: TurnReader | None = None) -> None:
        """Fill ``view`` with plaintext, decrypted into it by OpenSSL (no copies in Python); ``turn``: how
        this read hands the loop back and takes turns with others (``readturn``)."""
        tls = self._tls
        turn = turn or TurnReader()
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            while view:
                await turn.before_read()
                try:
                    # typeshed types the buffer as bytearray; OpenSSL's read takes any writable buffer
                    got = cast(int, tls.read(len(view), view))  # type: ignore[arg-type]
                except ssl.SSLWantReadError:
                    turn.parking()  # what is there is read: others may copy while this one waits
                    await self._flush()  # e.g. the answer to a TLS 1.3 KeyUpdate
                    # The ciphertext still to come is at least the plaintext still missing, less what OpenSSL
                    # holds: decrypted bytes, whole records in the BIO, and up to one record it began reading.
                    await self._fill(len(view) - tls.pending() - self._incoming.pending - TLS_RECORD_MAX)
                    continue
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # close_notify, or closed without one
                    got = 0
                if not got:
                    raise SourceUnavailable(f"{self.peer} closed the connection")
                view = view[got:]
                if view:
                    await turn.copied(got)
        finally:
            turn.finish()

    def close(self) -> None:
        """Close without a close_notify exchange: a dead or stalled peer must not hold the close up."""
        if self.socket.fileno() != -1:
            trio.lowlevel.notify_closing(self.socket)
        self.socket.close()
