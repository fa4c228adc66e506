"""A wire fuzzer for a live linkd: schema-driven random requests and their mutations over real sockets.

Used by ``tests/protocol/test_fuzz_live.py`` (a few thousand frames per CI run) and ``benchmarks/fuzz.py``
(100,000+). Every frame goes to one API key and version linkd advertises; bodies are drawn field by field
from Kafka's own message schemas (``protocol.messages.request_struct``), so most pass the decoder and
reach the handlers; a share is then mutated (bit flips, truncation, inserted bytes, length fields pushed
to extremes, a lying size prefix) so the decoder's error paths get their turn too.

A ``Bystander`` (confluent-kafka producer and an assigned consumer) runs next to the fuzzer on its own
topic; every one of its deliveries must succeed and every record must be read back in order. The fuzzer
never names that topic: its topic names come from its own pool.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from protocol import messages, primitives
from protocol.messages import RequestHeader
from protocol.records import build_records
from protocol.schema import KafkaStruct

_INTS = {1: (-(1 << 7), (1 << 7) - 1), 2: (-(1 << 15), (1 << 15) - 1), 4: (-(1 << 31), (1 << 31) - 1), 8: (-(1 << 63), (1 << 63) - 1)}
_EXTREME_LENGTHS = [b"\x7f\xff\xff\xff", b"\xff\xff\xff\xfe", b"\x80\x00\x00\x00", b"\xff\xff\xff\xff\x0f", b"\x00\x00\x00\x00"]


# Fields whose interesting values a uniform draw would rarely reach: with these, most random CreateTopics
# and CreatePartitions get past the checks before the partition count, where the expensive paths start.
FIELD_HINTS: dict[str, list] = {
    "replication_factor": [-1, 1],
    "num_partitions": [-1, 1, 2, 0, -5, 10_001, 100_000, 2**31 - 1],
    "count": [2, 3, 10_001, 100_000, 2**31 - 1],
    "assignments": [[], None],
    "configs": [[]],
    "validate_only": [False],
}


class BodyGenerator:
    """Random values for every field of a request schema; small, but reaching the edges of each type."""

    def __init__(self, rng: random.Random, topic_pool: list[str]) -> None:
        self.rng = rng
        self.topic_pool = topic_pool

    def body(self, api_key: int, version: int) -> dict:
        return self.value(messages.request_struct(api_key, version), depth=0)

    def hinted(self, key: str, codec, depth: int):
        hints = FIELD_HINTS.get(key)
        if hints is not None and self.rng.random() < 0.7:
            choice = self.rng.choice(hints)
            if choice is not None or getattr(codec, "nullable", False):
                return choice
        return self.value(codec, depth)

    def value(self, codec, depth: int):
        rng = self.rng
        if isinstance(codec, KafkaStruct):
            out = {m.key: self.hinted(m.key, m.codec, depth + 1) for m in codec.members}
            for member in codec.tagged.values():
                if rng.random() < 0.3:
                    out[member.key] = self.value(member.codec, depth + 1)
                else:
                    out[member.key] = member.codec.default() if not isinstance(member.codec, KafkaStruct) else member.codec.default()
            return out
        if isinstance(codec, primitives.NullableStruct):
            return None if rng.random() < 0.3 else self.value(codec.inner, depth + 1)
        if isinstance(codec, primitives._Array):
            if codec.nullable and rng.random() < 0.1:
                return None
            count = 0 if depth > 6 else rng.choice([0, 1, 1, 1, 2, 3])
            return [self.value(codec.element, depth + 1) for _ in range(count)]
        if isinstance(codec, primitives._Records):
            return None if rng.random() < 0.1 else build_records([rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 3))])
        if isinstance(codec, primitives._String):
            if codec.nullable and rng.random() < 0.15:
                return None
            roll = rng.random()
            if roll < 0.5:
                return rng.choice(self.topic_pool)
            if roll < 0.6:
                return ""
            if roll < 0.75:
                return f"fz{rng.randrange(1 << 20)}"  # a new, valid name: creations get past the name checks
            return "".join(rng.choice("abcxyz._-0123456789/ \u00e9") for _ in range(rng.randint(1, 20)))
        if isinstance(codec, primitives._Bytes):
            if codec.nullable and rng.random() < 0.15:
                return None
            return rng.randbytes(rng.randint(0, 32))
        if isinstance(codec, primitives._Bool):
            return rng.random() < 0.5
        if isinstance(codec, primitives._Uuid):
            return uuid.UUID(int=0) if rng.random() < 0.5 else uuid.UUID(int=rng.getrandbits(128))
        if isinstance(codec, primitives._Fixed):
            size = codec._size
            if codec._struct.format[-1] in "fd":
                return rng.choice([0.0, 1.0, -1.0, 1e300, float("nan")])
            low, high = _INTS[size]
            return rng.choice([0, 0, 1, -1, 2, 3, min(1000, high), high, low, rng.randint(low, high), rng.randint(-5, min(100, high))])
        if isinstance(codec, primitives._UnsignedVarint):
            return rng.choice([0, 1, 127, 128, 0xFFFFFFFF])
        if isinstance(codec, primitives._ZigZag):
            return rng.choice([0, 1, -1, codec._high, codec._low])
        return codec.default()


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One valid frame (size prefix included) damaged 1-4 times; the prefix is usually kept true."""
    body = bytearray(frame[4:])
    for _ in range(rng.randint(1, 4)):
        if not body:
            break
        at = rng.randrange(len(body))
        action = rng.choice(["flip", "set", "truncate", "insert", "extreme"])
        if action == "flip":
            body[at] ^= 1 << rng.randrange(8)
        elif action == "set":
            body[at] = rng.randrange(256)
        elif action == "truncate":
            del body[at:]
        elif action == "insert":
            body[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            body[at : at + 4] = rng.choice(_EXTREME_LENGTHS)
    size = len(body)
    if rng.random() < 0.03:
        size = rng.choice([size + rng.randint(1, 100), max(size - rng.randint(1, 10), 0), 0x7FFFFFFF, -1])
    return struct.pack(">i", size) + bytes(body)


@dataclass
class FuzzFigures:
    frames: int = 0
    mutated: int = 0
    answered: int = 0
    closed: int = 0
    no_answer: int = 0
    by_api: dict[str, int] = field(default_factory=dict)


class WireFuzzer:
    """Sends ``frames`` requests over ``connections`` sockets; an answer is read (up to ``answer_wait`` s) and
    dropped; a closed or silent connection is replaced."""

    def __init__(self, bootstrap: str, seed: int, versions: dict[int, tuple[int, int]], topic_pool: list[str], answer_wait: float = 0.3) -> None:
        self.host, _, port = bootstrap.rpartition(":")
        self.port = int(port)
        self.rng = random.Random(seed)
        self.versions = versions
        self.generator = BodyGenerator(self.rng, topic_pool)
        self.answer_wait = answer_wait
        self.figures = FuzzFigures()

    def _frame(self) -> tuple[bytes, str]:
        rng = self.rng
        api_key = rng.choice(sorted(self.versions))
        low, high = self.versions[api_key]
        version = rng.randint(low, high)
        header = RequestHeader(api_key, version, rng.randint(0, 1 << 30), rng.choice(["fuzz", None, "", "x" * 300]))
        frame = messages.encode_request(header, self.generator.body(api_key, version))
        name = f"{messages.ApiKey(api_key).name}:{version}"
        if rng.random() < 0.35:
            self.figures.mutated += 1
            return mutate(rng, frame), name
        return frame, name

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        sock.settimeout(self.answer_wait)
        return sock

    def run(self, frames: int, deadline: float | None = None) -> FuzzFigures:
        sock: socket.socket | None = None
        try:
            for _ in range(frames):
                if deadline is not None and time.monotonic() > deadline:
                    break
                frame, name = self._frame()
                self.figures.frames += 1
                self.figures.by_api[name] = self.figures.by_api.get(name, 0) + 1
                if sock is None:
                    sock = self._connect()
                try:
                    sock.sendall(frame)
                    data = sock.recv(1 << 16)
                    if data:
                        self.figures.answered += 1
                        self._drain(sock, data)
                        continue
                    self.figures.closed += 1
                except TimeoutError:
                    self.figures.no_answer += 1  # acks=0, a long poll, or a frame still incomplete
                except OSError:
                    self.figures.closed += 1
                sock.close()
                sock = None
        finally:
            if sock is not None:
                sock.close()
        return self.figures

    def _drain(self, sock: socket.socket, data: bytes) -> None:
        """Read the rest of one answer so the next request's answer starts at a frame boundary."""
        if len(data) < 4:
            return
        want = 4 + struct.unpack(">i", data[:4])[0]
        got = len(data)
        while got < want:
            chunk = sock.recv(min(1 << 20, want - got))
            if not chunk:
                return
            got += len(chunk)


class Bystander:
    """A well-behaved client: a confluent-kafka producer (acks=all) and an assigned consumer on one topic.

    ``failures`` collects every failed delivery, consumer error and out-of-order or missing record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.sent = 0
        self.delivered = 0
        self.consumed = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._produced_all = threading.Event()  # the producer flushed: ``delivered`` is final
        self._threads = [threading.Thread(target=self._produce, daemon=True), threading.Thread(target=self._consume, daemon=True)]

    def _error(self, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(what)

    def _produce(self) -> None:
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "linger.ms": 0, "error_cb": lambda e: self._error(f"producer: {e}")})

        def on_delivery(err, msg) -> None:
            if err is not None:
                self._error(f"delivery: {err}")
            else:
                self.delivered += 1

        while not self._stop.is_set():
            producer.produce(self.topic, value=f"bystander-{self.sent}".encode(), partition=0, on_delivery=on_delivery)
            self.sent += 1
            producer.poll(0.02)
        try:
            if producer.flush(15):
                self._error("producer: records still undelivered at the end")
        finally:
            self._produced_all.set()

    def _consume(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bystander-{uuid.uuid4().hex}", "enable.auto.commit": False, "error_cb": lambda e: self._error(f"consumer: {e}")})
        consumer.assign([TopicPartition(self.topic, 0, 0)])
        try:
            while not self._produced_all.is_set() or self.consumed < self.delivered:
                msg = consumer.poll(0.2)
                if msg is None:
                    if self._produced_all.is_set() and time.monotonic() > self._drain_deadline:
                        self._error(f"consumer: read {self.consumed} of {self.delivered} delivered records")
                        return
                    continue
                if msg.error():
                    self._error(f"consumer: {msg.error()}")
                    continue
                expected = f"bystander-{self.consumed}".encode()
                if msg.value() != expected:
                    self._error(f"consumer: got {msg.value()!r}, expected {expected!r}")
                self.consumed += 1
        finally:
            consumer.close()

    def __enter__(self) -> Bystander:
        self._drain_deadline = float("inf")
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 30
        while self.consumed < 3 and time.monotonic() < deadline and not self.failures:
            time.sleep(0.05)
        if self.consumed < 3:
            self._error(f"bystander did not start: {self.failures}")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._threads[0].join(30)
        self._drain_deadline = time.monotonic() + 15
        self._threads[1].join(30)


def process_figures(pid: int) -> tuple[int, int]:
    """(VmHWM bytes = peak RSS so far, open descriptors now) of a process, from /proc."""
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return hwm, len(list(Path(f"/proc/{pid}/fd").iterdir()))


class DescriptorSampler:
    """Samples a process's open descriptors every ``interval`` s; ``peak`` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, process_figures(self.pid)[1])
            except OSError:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> DescriptorSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def internal_errors(log_text: str, known: dict[str, str] | None = None) -> list[str]:
    """ERROR/CRITICAL records in a daemon log (a bug on our side, not a peer's bad input), minus those whose
    message contains a key of ``known`` (bugs already reported, each with its reason)."""
    found = []
    for line in log_text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in ("ERROR", "CRITICAL"):
            if not any(k in parts[3] for k in (known or {})):
                found.append(parts[3])
    return found
