"""From listener specs and Kafka-named security settings to the listener's ``Endpoint`` objects.

Every problem is found here, before anything binds: a TLS listener without a keystore, an unreadable
store, an unknown SASL mechanism, a security setting for a listener that does not exist.
"""

from __future__ import annotations

import logging

from .listeners import ListenerConfigError, ListenerSpec, SecurityProperties, is_loopback
from .sasl import enabled_mechanisms
from .saslgate import SaslSettings
from .server import Endpoint
from .tls import server_context

log = logging.getLogger(__name__)


def build_endpoints(specs: list[ListenerSpec], props: SecurityProperties) -> list[Endpoint]:
    names = {s.name.lower() for s in specs}
    for key in props.values:
        if key.startswith("listener.name.") and key.split(".")[2] not in names:
            raise ListenerConfigError(f"{key}: no listener is named {key.split('.')[2].upper()}")
    endpoints = []
    for spec in specs:
        settings = props.for_listener(spec.name)
        if not spec.tls:
            stray = sorted(k for k in settings if k.startswith("ssl.") and f"listener.name.{spec.name.lower()}.{k}" in props.values)
            if stray:
                raise ListenerConfigError(f"listener {spec.name} is {spec.protocol}: {', '.join(stray)} would do nothing there")
        context = server_context(spec.name, settings) if spec.tls else None
        sasl = None
        if spec.sasl:
            try:
                mechanisms = enabled_mechanisms(settings.get("sasl.enabled.mechanisms"))
                reauth_ms = int(settings.get("connections.max.reauth.ms", "0"))
                max_receive = int(settings.get("sasl.server.max.receive.size", "524288"))
            except ValueError as exc:
                raise ListenerConfigError(f"listener {spec.name}: {exc}") from None
            if reauth_ms < 0:
                raise ListenerConfigError(f"listener {spec.name}: connections.max.reauth.ms must be >= 0")
            if max_receive < 1024:
                raise ListenerConfigError(f"listener {spec.name}: sasl.server.max.receive.size must be at least 1024")
            oauth = None
            if settings.get("sasl.oauthbearer.jwks.endpoint.url"):
                raise ListenerConfigError(f"listener {spec.name}: sasl.oauthbearer.jwks.endpoint.url (validating signed tokens) is not supported yet")
            if "OAUTHBEARER" in mechanisms:
                from .oauthbearer import UnsecuredValidatorOptions

                try:
                    oauth = UnsecuredValidatorOptions.from_jaas(settings.get("oauthbearer.sasl.jaas.config"))
                except ValueError as exc:
                    raise ListenerConfigError(f"listener {spec.name}: {exc}") from None
                log.warning("listener %s accepts OAUTHBEARER with Kafka's unsecured validator: unsigned tokens anyone can make are "
                            "accepted. For test and development clusters only.", spec.name)
            elif settings.get("oauthbearer.sasl.jaas.config"):
                raise ListenerConfigError(f"listener {spec.name}: oauthbearer.sasl.jaas.config is set but OAUTHBEARER is not in sasl.enabled.mechanisms")
            sasl = SaslSettings(mechanisms, reauth_ms, oauth, max_receive)
        endpoints.append(Endpoint(spec.name, spec.protocol, context, sasl))
    return endpoints


def warn_if_exposed(spec: ListenerSpec, settings: dict[str, str]) -> bool:
    """Log a WARNING when a listener anyone can use without credentials binds beyond loopback."""
    if is_loopback(spec.host):
        return False
    if spec.protocol == "PLAINTEXT":
        why = "PLAINTEXT"
    elif spec.protocol == "SSL" and settings.get("ssl.client.auth", "none").strip().lower() != "required":
        why = "SSL without ssl.client.auth=required"
    else:
        return False
    log.warning("listener %s binds %s:%d (beyond loopback) and is %s: any client that reaches it can read, write and "
                "delete topics without authenticating. Use SASL_SSL or SASL_PLAINTEXT (see 'Securing linkd' in the operator guide).",
                spec.name, spec.host, spec.port, why)
    return True
