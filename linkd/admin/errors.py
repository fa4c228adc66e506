"""The admin API's errors: HTTP statuses and REST v3 error codes live here, never in the domain.

``AdminError`` is a refusal by the HTTP layer itself (a body too large, a bad parameter), with its status.
``status_for`` maps a domain error's kind (``linkd.link.errors.DomainError``) to the status Kafka REST
answers with, and ``rest_code_for`` to the ``error_code`` of the JSON body: as Confluent's REST v3, the
status times 100 plus a sub-code — 01 for most (40101, 40301, 40401, 40901, 41301, 50001, 50301), and
40002 for a request the link layer refuses on its merits (Confluent's code for Kafka's invalid-request
refusals), so it can be told from 40001, a request the HTTP layer could not read (a bad parameter or body).
"""

from __future__ import annotations

from ..link.errors import DomainError, ErrorKind

HTTP_STATUS = {
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.INVALID: 400,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DENIED: 403,
}

REST_CODE = {
    ErrorKind.NOT_FOUND: 40401,
    ErrorKind.CONFLICT: 40901,
    ErrorKind.INVALID: 40002,
    ErrorKind.UNAVAILABLE: 50301,
    ErrorKind.DENIED: 40301,
}


class AdminError(Exception):
    """A request the admin API refuses; ``status`` is the HTTP status it answers with, ``error_code`` the
    REST v3 code (0: the status's ``01`` code)."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code or rest_code(status)
        self.message = message


def rest_code(status: int) -> int:
    """The HTTP layer's own REST v3 code for ``status`` (sub-code 01, as the front door's refusals)."""
    return status * 100 + 1


def status_for(error: DomainError) -> int:
    return HTTP_STATUS[error.kind]


def rest_code_for(error: DomainError) -> int:
    return REST_CODE[error.kind]
