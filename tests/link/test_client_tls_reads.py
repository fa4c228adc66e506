"""How the link client reads response frames over TLS (``TlsStream``) from a real TLS peer on a real
socket: whole and byte-exact however the records fall, waking about once per RCVLOWAT_MAX of arrived data
rather than once per record, frames that share records, and never hanging on a peer that goes away."""

from __future__ import annotations

import os
import ssl

import pytest
import trio

from linkd.link.client import RCVLOWAT_MAX, Connection, SourceUnavailable, TlsStream

CHUNK = 32 * 1024


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory):
    """(server key + certificate chain PEM, CA PEM) from a throwaway CA; the server is 127.0.0.1."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from tests.peers.securekafka import STORE_PASSWORD, make_pki

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    key, cert, chain = pkcs12.load_key_and_certificates(pki.server_p12.read_bytes(), STORE_PASSWORD.encode())
    pem = pki.directory / "server-chain.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])
    )
    return pem, pki.ca_pem


@pytest.fixture(scope="module")
def contexts(pki_files) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts; the client checks the certificate and host name."""
    chain, ca = pki_files
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(ca)
    return server, client


async def _serve_once(server_ctx: ssl.SSLContext, parts: list[bytes], close_early: bool, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = trio.SSLStream(await listeners[0].accept(), server_ctx, server_side=True)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError:  # the client refused us (the test looks at why)
        parts, close_early = [], True
    for part in parts:
        await stream.send_all(part)  # each part its own TLS record(s)
        await trio.sleep(0.0005)  # trickle, as a remote broker's records arrive
    if not close_early:
        await trio.sleep(5)
    await trio.aclose_forcefully(stream)
    for listener in listeners:
        await listener.aclose()


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def _parts(data: bytes, size: int = CHUNK) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


async def _read_frames(contexts, parts: list[bytes], count: int = 1, close_early: bool = False, after_handshake=None) -> list[bytes]:
    server_ctx, client_ctx = contexts
    frames: list[bytes] = []
    failure: SourceUnavailable | None = None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_once, server_ctx, parts, close_early)
        tls = await TlsStream.wrap(await trio.open_tcp_stream("127.0.0.1", port), client_ctx, "127.0.0.1")
        if after_handshake is not None:
            after_handshake()
        conn = Connection("127.0.0.1", port, tls, "test", 64 << 20, {})
        try:
            with trio.fail_after(20):
                for _ in range(count):
                    frames.append(bytes(await conn._next_frame()))
        except SourceUnavailable as exc:
            failure = exc
        finally:
            await conn.aclose()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return frames


@pytest.fixture
def wakeups(monkeypatch) -> list[int]:
    """Counts the reader's waits for the socket (a spy: every call goes through to trio)."""
    counted: list[int] = []
    real = trio.lowlevel.wait_readable

    async def counting(sock):
        counted.append(1)
        await real(sock)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", counting)
    return counted


def test_a_trickling_tls_frame_is_read_whole_with_one_wakeup_per_rcvlowat(contexts, wakeups):
    payload = os.urandom(3 * RCVLOWAT_MAX + 12345)
    frames = trio.run(lambda: _read_frames(contexts, _parts(_frame(payload)), after_handshake=wakeups.clear))
    assert frames == [payload]
    # ~100 pieces (200 TLS records) arrived one by one; the reader woke about once per RCVLOWAT_MAX.
    assert len(wakeups) <= 3 * (len(payload) // RCVLOWAT_MAX + 2), f"{len(wakeups)} wake-ups for {len(payload)} bytes"


def test_small_frames_and_a_header_split_across_records_arrive_byte_exact(contexts):
    for size in (0, 1, 5000, CHUNK * 3 + 7):
        payload = os.urandom(size)
        assert trio.run(_read_frames, contexts, _parts(_frame(payload))) == [payload]
    payload = os.urandom(1000)
    data = _frame(payload)
    assert trio.run(lambda: _read_frames(contexts, [data[:1], data[1:3], data[3:5], data[5:]])) == [payload]


def test_frames_sharing_records_are_read_one_after_another_without_waiting(contexts):
    # Three frames in one stream of records: the second and third start inside records the first one's
    # read already decrypted or buffered, and nothing else is coming; reading them must not wait for more.
    payloads = [os.urandom(n) for n in (300_000, 17, 2 * RCVLOWAT_MAX)]
    data = b"".join(_frame(p) for p in payloads)
    assert trio.run(lambda: _read_frames(contexts, [data], count=3)) == payloads
    assert trio.run(lambda: _read_frames(contexts, _parts(data, 10_000), count=3)) == payloads


def test_a_tls_peer_closing_mid_frame_is_an_error_not_a_hang(contexts):
    data = _frame(os.urandom(2 * RCVLOWAT_MAX))
    with pytest.raises(SourceUnavailable, match="closed the connection"):
        trio.run(lambda: _read_frames(contexts, _parts(data[: RCVLOWAT_MAX // 2]), close_early=True))


def test_the_host_name_is_checked_against_the_certificate(contexts):
    server_ctx, client_ctx = contexts

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_serve_once, server_ctx, [], False)
            with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|not valid"):
                await TlsStream.wrap(await trio.open_tcp_stream("127.0.0.1", port), client_ctx, "not-this-host.invalid")
            nursery.cancel_scope.cancel()

    trio.run(main)



def test_the_protocol_and_cipher_settings_decide_what_is_negotiated(contexts, pki_files):
    from linkd.link.security import build_ssl_context

    chain, ca = pki_files

    async def negotiated(settings: dict[str, str], server: ssl.SSLContext):
        client_ctx = build_ssl_context({"ssl.truststore.location": str(ca), **settings})
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_serve_once, server, [], False)
            tls = await TlsStream.wrap(await trio.open_tcp_stream("127.0.0.1", port), client_ctx, "127.0.0.1")
            cipher = tls.cipher()
            tls.close()
            nursery.cancel_scope.cancel()
        return cipher

    assert trio.run(negotiated, {}, contexts[0])[1] == "TLSv1.3"
    suite = {"ssl.enabled.protocols": "TLSv1.2", "ssl.cipher.suites": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
    assert trio.run(negotiated, suite, contexts[0])[:2] == ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2")
    # A server that stops at TLS 1.2 is refused by a client that enables only TLS 1.3.
    tls12_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls12_server.load_cert_chain(chain)
    tls12_server.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(BaseExceptionGroup) as failure:
        trio.run(negotiated, {"ssl.enabled.protocols": "TLSv1.3"}, tls12_server)
    assert failure.group_contains(ssl.SSLError)


def test_a_send_cancelled_halfway_is_finished_by_the_next_one(contexts):
    """A request timed out mid-send must not leave half a TLS record on the wire: the next send sends the
    rest first, and the peer decrypts every byte in order."""
    server_ctx, client_ctx = contexts
    big = os.urandom(16 << 20)
    received = bytearray()
    done = trio.Event()

    async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        stream = trio.SSLStream(await listeners[0].accept(), server_ctx, server_side=True)
        await stream.do_handshake()
        await trio.sleep(0.5)  # not reading yet: the client's socket buffer fills up
        while len(received) < len(big) + 4:
            data = await stream.receive_some(1 << 20)
            if not data:
                break
            received.extend(data)
        done.set()
        await trio.aclose_forcefully(stream)
        for listener in listeners:
            await listener.aclose()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve)
            tls = await TlsStream.wrap(await trio.open_tcp_stream("127.0.0.1", port), client_ctx, "127.0.0.1")
            with trio.move_on_after(0.2) as scope:
                await tls.send_all(big)
            assert scope.cancelled_caught, "the send should have been cut short by a full socket buffer"
            with trio.fail_after(20):
                await tls.send_all(b"tail")
                await done.wait()
            tls.close()

    trio.run(main)
    assert bytes(received) == big + b"tail"
