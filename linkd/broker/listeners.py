"""Kafka's listener names: ``listeners``, ``advertised.listeners``, ``listener.security.protocol.map``.

``linkd serve --listener NAME://HOST:PORT`` (repeatable) binds one listener per name; the protocol map
says what each name speaks (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), defaulting as Kafka does to the
four names that are protocols themselves. ``--advertised-listener NAME://HOST:PORT`` is what Metadata,
FindCoordinator and DescribeCluster answer to a client connected to that listener. The older bare
``HOST:PORT`` form still works: it is the listener named PLAINTEXT (and, for ``--advertised-listener``,
the address of the only listener).

Security settings use Kafka's broker property names (``ssl.keystore.location``, ``ssl.client.auth``,
``sasl.enabled.mechanisms``, ``connections.max.reauth.ms``, ...), each either for every listener or
for one with Kafka's prefix ``listener.name.<name lower case>.<key>``, which wins.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

import javaproperties

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")

SSL_KEYS = {
    "ssl.keystore.location", "ssl.keystore.type", "ssl.keystore.password", "ssl.key.password",
    "ssl.keystore.certificate.chain", "ssl.keystore.key",
    "ssl.truststore.location", "ssl.truststore.type", "ssl.truststore.password", "ssl.truststore.certificates",
    "ssl.client.auth", "ssl.enabled.protocols", "ssl.protocol", "ssl.cipher.suites", "ssl.principal.mapping.rules",
}
SASL_KEYS = {"sasl.enabled.mechanisms", "connections.max.reauth.ms", "sasl.server.max.receive.size", "oauthbearer.sasl.jaas.config", "sasl.oauthbearer.jwks.endpoint.url"}
KNOWN_KEYS = SSL_KEYS | SASL_KEYS
PASSWORD_KEYS = {"ssl.keystore.password", "ssl.key.password", "ssl.truststore.password", "ssl.keystore.key"}
_PREFIX = re.compile(r"^listener\.name\.([a-z0-9_]+)\.(.+)$")


class ListenerConfigError(ValueError):
    """A listener flag or security setting that cannot work; the message names it."""


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    host: str
    port: int
    protocol: str
    advertised_host: str | None = None  # None: the bind address
    advertised_port: int | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")


@dataclass(frozen=True)
class SecurityProperties:
    """The listeners' security settings by Kafka name; ``get`` applies the listener prefix."""

    values: dict[str, str] = field(default_factory=dict)

    def get(self, listener: str, key: str, default: str | None = None) -> str | None:
        prefixed = f"listener.name.{listener.lower()}.{key}"
        if prefixed in self.values:
            return self.values[prefixed]
        return self.values.get(key, default)

    def for_listener(self, listener: str) -> dict[str, str]:
        """The unprefixed view one listener sees."""
        out = {k: v for k, v in self.values.items() if not k.startswith("listener.name.")}
        prefix = f"listener.name.{listener.lower()}."
        out.update({k[len(prefix):]: v for k, v in self.values.items() if k.startswith(prefix)})
        return out


def parse_properties(pairs: list[str], file_text: str | None = None) -> SecurityProperties:
    """``KEY=VALUE`` pairs (and a ``.properties`` file's lines first); unknown keys are refused by name."""
    values: dict[str, str] = {}
    if file_text:
        try:
            values.update(javaproperties.loads(file_text))  # Java's .properties syntax, as Kafka reads it
        except (ValueError, UnicodeError) as exc:
            raise ListenerConfigError(f"cannot parse the listener config file: {exc}") from exc
    for raw in pairs:
        key, sep, value = raw.strip().partition("=")
        key = key.strip()
        if not sep or not key:
            raise ListenerConfigError(f"listener setting must be KEY=VALUE, got {raw!r}")
        values[key] = value.strip()
    unknown = sorted(k for k in values if _base_key(k) not in KNOWN_KEYS)
    if unknown:
        raise ListenerConfigError(f"unknown listener setting(s): {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_KEYS))}, optionally prefixed listener.name.<name>.)")
    return SecurityProperties(values)


def _base_key(key: str) -> str:
    match = _PREFIX.match(key)
    return match.group(2) if match else key


def _split_url(value: str, what: str, default_name: str | None) -> tuple[str, str, int]:
    name, sep, rest = value.partition("://")
    if not sep:
        if default_name is None:
            raise ListenerConfigError(f"{what} must be NAME://HOST:PORT, got {value!r}")
        name, rest = default_name, value
    if not _NAME.match(name):
        raise ListenerConfigError(f"{what}: listener name {name!r} must be letters, digits and _")
    host, colon, port = rest.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenerConfigError(f"{what} must be [NAME://]HOST:PORT, got {value!r}")
    # Kafka's NAME://:9092 binds every interface; an empty host in linkd means the same.
    return name.upper(), (host.strip("[]") or "0.0.0.0"), int(port)


def parse_protocol_map(value: str | None) -> dict[str, str]:
    mapping = {p: p for p in PROTOCOLS}
    if not value:
        return mapping
    for item in value.split(","):
        name, sep, protocol = item.strip().partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not _NAME.match(name):
            raise ListenerConfigError(f"--listener-security-protocol-map entries must be NAME:PROTOCOL, got {item!r}")
        if protocol not in PROTOCOLS:
            raise ListenerConfigError(f"--listener-security-protocol-map: {protocol or 'empty'} for {name} is not a security protocol ({', '.join(PROTOCOLS)})")
        mapping[name] = protocol
    return mapping


def parse_listeners(listeners: list[str], protocol_map: str | None = None, advertised: list[str] | None = None) -> list[ListenerSpec]:
    mapping = parse_protocol_map(protocol_map)
    specs: dict[str, ListenerSpec] = {}
    for value in listeners:
        name, host, port = _split_url(value, "--listener", "PLAINTEXT")
        if name in specs:
            raise ListenerConfigError(f"--listener: the name {name} is used twice")
        if name not in mapping:
            raise ListenerConfigError(f"--listener {value}: listener {name} has no security protocol (add {name}:PROTOCOL to --listener-security-protocol-map)")
        specs[name] = ListenerSpec(name, host, port, mapping[name])
    if not specs:
        raise ListenerConfigError("at least one --listener is needed")
    for value in advertised or []:
        only = next(iter(specs)) if len(specs) == 1 else None
        name, host, port = _split_url(value, "--advertised-listener", only)
        if name not in specs:
            raise ListenerConfigError(f"--advertised-listener {value}: no --listener is named {name}")
        spec = specs[name]
        specs[name] = ListenerSpec(spec.name, spec.host, spec.port, spec.protocol, host, port)
    return list(specs.values())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve beyond loopback
