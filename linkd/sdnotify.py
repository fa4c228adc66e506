"""systemd's readiness protocol (``Type=notify``): datagrams such as ``READY=1`` to ``$NOTIFY_SOCKET``.

A few lines of socket code instead of a dependency: the protocol is one ``sendto`` of ``KEY=VALUE`` lines
on a unix datagram socket whose path is in the environment (a leading ``@`` means Linux's abstract
namespace). Without ``$NOTIFY_SOCKET`` (not under systemd) every call does nothing, by design: the
environment variable is systemd's request for these messages.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*lines: str) -> bool:
    """Send ``lines`` (e.g. ``"READY=1"``) to the service manager; True if a manager was there to tell."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:
        log.warning("cannot notify the service manager at NOTIFY_SOCKET=%s: %s", path, exc.strerror or exc)
        return False
    return True
