"""Who is on a connection: the principal every handler authorizes against.

One ``Session`` per client connection, created by the listener when the connection is accepted and
updated when it authenticates (SASL, or a TLS client certificate). Handlers read it through
``RequestContext.session``; they never look at the socket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

ANONYMOUS = "User:ANONYMOUS"


@dataclass
class Session:
    """The connection's identity. ``principal`` is Kafka's ``Type:name`` form (``User:alice``)."""

    host: str  # the client's address, without Kafka's leading "/"
    listener: str = "PLAINTEXT"  # the listener's name, as in listeners=NAME://host:port
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    principal: str = ANONYMOUS
    mechanism: str | None = None  # the SASL mechanism the connection authenticated with, if any
    authenticated: bool = True  # False on a SASL listener until SaslAuthenticate succeeds


class Authorizer(Protocol):
    """Kafka's authorizer contract, reduced to what handlers need.

    ``resource_type`` and ``operation`` use Kafka's names (``TOPIC``, ``GROUP``, ``CLUSTER``,
    ``TRANSACTIONAL_ID``; ``READ``, ``WRITE``, ``DESCRIBE``, ...).
    """

    def authorize(self, session: Session, operation: str, resource_type: str, name: str) -> bool: ...
