"""The admin API's errors: HTTP statuses live here, never in the domain.

``AdminError`` is a refusal by the HTTP layer itself (a body too large, a bad parameter), with its status.
``status_for`` maps a domain error's kind (``linkd.link.errors.DomainError``) to the status Kafka REST
answers with.
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


class AdminError(Exception):
    """A request the admin API refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def status_for(error: DomainError) -> int:
    return HTTP_STATUS[error.kind]
