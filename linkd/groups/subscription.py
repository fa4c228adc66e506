"""The topics a classic consumer group's members subscribe to, read from their JoinGroup metadata.

A member of protocol type ``consumer`` sends, per assignor, a ConsumerProtocolSubscription (any version
starts ``int16 version, int32 topic count, (int16 length, utf-8 name)*``). OffsetDelete refuses to delete
offsets of a topic the live group subscribes to (``GROUP_SUBSCRIBED_TO_TOPIC``), as Kafka does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable


def subscribed_topics(metadatas: Iterable[bytes]) -> set[str] | None:
    """Union of the topics in the members' subscriptions; None when one cannot be read (then every topic
    counts as subscribed: refusing a delete is safe, deleting a live group's offsets is not)."""
    topics: set[str] = set()
    for data in metadatas:
        try:
            _version, count = struct.unpack_from(">hi", data, 0)
            pos = 6
            for _ in range(count):
                (length,) = struct.unpack_from(">h", data, pos)
                pos += 2
                if length < 0 or pos + length > len(data):
                    return None
                topics.add(bytes(data[pos : pos + length]).decode())
                pos += length
        except (struct.error, UnicodeDecodeError):
            return None
    return topics
