"""Client CPU per GB read over TLS: linkd's TlsStream against trio's SSLStream, from a local TLS sender.

    .venv/bin/python benchmarks/tls_reads.py [--mb 200] [--rounds 5] [--json PATH]

A separate Python process serves 8 MiB frames over TLS 1.3 (a throwaway CA from tests/peers/securekafka.py);
this process asks for one frame after another and reads each into one buffer, with

* ``TlsStream`` (linkd.link.client: stdlib SSLObject over memory BIOs fed by 1 MiB reads, SO_RCVLOWAT),
* ``trio.SSLStream`` read in 256 KiB pieces copied into the buffer (what the link client did before).

Prints JSON: median CPU seconds (user + system of this process) per GB received and MB/s, per reader,
interleaved round by round. The sender's CPU is not counted; it shares the machine, so MB/s is noisy.
"""

from __future__ import annotations

import argparse
import json
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRAME = 8 << 20

SENDER = r"""
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
frame = (8 << 20).to_bytes(4, "big") + bytes(8 << 20)
while True:
    conn = ctx.wrap_socket(listener.accept()[0], server_side=True)
    try:
        while conn.recv(4):
            conn.sendall(frame)
    except OSError:
        pass
    conn.close()
"""


def _pki(directory: Path) -> tuple[Path, Path]:
    """(server chain + key PEM, CA PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from tests.peers.securekafka import STORE_PASSWORD, make_pki

    pki = make_pki(directory)
    key, cert, chain = pkcs12.load_key_and_certificates(pki.server_p12.read_bytes(), STORE_PASSWORD.encode())
    pem = directory / "server-chain.pem"
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [cert, *chain])
    )
    return pem, pki.ca_pem


def read_all(reader: str, port: int, context: ssl.SSLContext, total: int) -> tuple[float, float]:
    """(CPU s, wall s) to read ``total`` bytes of frames with ``reader``."""
    import trio

    from linkd.link.client import TlsStream

    async def run() -> tuple[float, float]:
        transport = await trio.open_tcp_stream("127.0.0.1", port)
        if reader == "TlsStream":
            stream = await TlsStream.wrap(transport, context, "127.0.0.1")
        else:
            stream = trio.SSLStream(transport, context, server_hostname="127.0.0.1")
            await stream.do_handshake()
        header, frame = bytearray(4), bytearray(FRAME)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(total // FRAME):
            await stream.send_all(b"next")
            if reader == "TlsStream":
                await stream.read_exactly(memoryview(header))
                await stream.read_exactly(memoryview(frame))
            else:
                for view in (memoryview(header), memoryview(frame)):
                    while view:
                        data = await stream.receive_some(min(len(view), 256 * 1024))
                        view[: len(data)] = data
                        view = view[len(data) :]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if reader == "TlsStream":
            stream.close()
        else:
            await trio.aclose_forcefully(stream)
        return cpu, wall

    return trio.run(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MiB read per reader and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    total = max(args.mb << 20, FRAME)
    chain, ca = _pki(Path(tempfile.mkdtemp(prefix="linkd-bench-tls-")))
    sender = subprocess.Popen([sys.executable, "-c", SENDER, str(chain)], stdout=subprocess.PIPE, text=True)
    try:
        port = int(sender.stdout.readline())
        context = ssl.create_default_context(cafile=str(ca))
        runs: dict[str, list[tuple[float, float]]] = {"TlsStream": [], "trio.SSLStream": []}
        for round_number in range(args.rounds + 1):  # round 0 warms up
            for reader in runs:
                cpu, wall = read_all(reader, port, context, total)
                if round_number:
                    runs[reader].append((cpu, wall))
    finally:
        sender.kill()
        sender.wait()
    gb = total / 1e9
    result = {
        "benchmark": "tls_reads",
        "bytes_per_round": total,
        "rounds": args.rounds,
        "readers": {
            reader: {
                "cpu_s_per_gb": round(statistics.median(c for c, _ in rs) / gb, 3),
                "all_cpu_s_per_gb": [round(c / gb, 3) for c, _ in rs],
                "mb_per_s": round(statistics.median(total / 1e6 / w for _, w in rs), 1),
            }
            for reader, rs in runs.items()
        },
    }
    result["cpu_ratio_trio_to_tlsstream"] = round(result["readers"]["trio.SSLStream"]["cpu_s_per_gb"] / result["readers"]["TlsStream"]["cpu_s_per_gb"], 2)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
