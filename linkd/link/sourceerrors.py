"""What can go wrong talking to a source cluster, as the link layer sees it.

Kept apart from the connection (``client.py``) so the sans-IO core and the TLS stream can name these
errors without importing the connection.
"""

from __future__ import annotations

import logging

from protocol.errors import ErrorCode

log = logging.getLogger(__name__)


def source_error(code: int) -> ErrorCode:
    """A source's error code as ours; one we do not know (a newer broker's) reads as UNKNOWN_SERVER_ERROR
    rather than an exception in whatever loop parsed it."""
    try:
        return ErrorCode(code)
    except ValueError:
        log.debug("source answered error code %d, unknown to linkd; read as UNKNOWN_SERVER_ERROR", code)
        return ErrorCode.UNKNOWN_SERVER_ERROR


class SourceUnavailable(Exception):
    """The source could not be reached or the connection broke."""


class SourceProtocolError(Exception):
    """The source answered with something we cannot use."""


class AuthenticationFailed(SourceUnavailable):
    """The source refused who we are (SASL) or we refused who it is (TLS).

    A kind of SourceUnavailable, so every path that retries an unreachable source with back-off retries
    this one too (an operator may fix the credentials at the source); ``error`` is the Kafka error name
    (``SASL_AUTHENTICATION_FAILED``, ``UNSUPPORTED_SASL_MECHANISM``, ``SSL_HANDSHAKE_FAILED``) and the
    message carries the broker's own words when it gave some.
    """

    link_error = "AUTHENTICATION_ERROR"

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error

