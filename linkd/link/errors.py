"""The link layer's domain error: an operation refused, with a *kind* saying whose move it is, and the
Kafka error code. It knows nothing of HTTP; the admin API maps the kind to a status (admin/errors.py)."""

from __future__ import annotations

import enum


class ErrorKind(enum.StrEnum):
    NOT_FOUND = "not_found"  # no such link, mirror, partition, config
    CONFLICT = "conflict"  # exists already, or the object's state does not allow it now
    INVALID = "invalid"  # the request itself is wrong (a name, a config value)
    UNAVAILABLE = "unavailable"  # the source (or this daemon) cannot do it right now; retry later
    DENIED = "denied"  # the source refuses the link's principal (grant it the permission)


class DomainError(Exception):
    def __init__(self, kind: ErrorKind, error_code: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.error_code = int(error_code)
        self.message = message
