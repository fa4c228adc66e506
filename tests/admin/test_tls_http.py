"""The admin API over HTTPS, and mTLS: a client certificate signed by --admin-tls-ca is required."""

from __future__ import annotations

import ssl

import httpx
import pytest

from tests.peers import LOOPBACK
from tests.peers.securekafka import _cert, _key


def _write_pki(directory):
    from cryptography.hazmat.primitives import serialization

    pem, pkcs8, plain = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ca_key, stranger_key, server_key, client_key, forged_key = _key(), _key(), _key(), _key(), _key()
    ca = _cert("admin-ca", ca_key, "admin-ca", ca_key, ca=True)
    files = {
        "ca.pem": ca.public_bytes(pem),
        "server.pem": _cert("localhost", server_key, "admin-ca", ca_key, dns=("localhost",), ips=(LOOPBACK,)).public_bytes(pem),
        "server.key": server_key.private_bytes(pem, pkcs8, plain),
        "client.pem": _cert("operator", client_key, "admin-ca", ca_key, client=True).public_bytes(pem),
        "client.key": client_key.private_bytes(pem, pkcs8, plain),
        "forged.pem": _cert("operator", forged_key, "stranger-ca", stranger_key, client=True).public_bytes(pem),
        "forged.key": forged_key.private_bytes(pem, pkcs8, plain),
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return {name: str(directory / name) for name in files}


def _context(pki, cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki["ca.pem"])
    if cert:
        context.load_cert_chain(pki[f"{cert}.pem"], pki[f"{cert}.key"])
    return context


@pytest.mark.timeout(90)
def test_https_admin_api_with_mtls(linkd_factory, tmp_path):
    pki = _write_pki(tmp_path)
    daemon = linkd_factory(extra_args=["--admin-tls-cert", pki["server.pem"], "--admin-tls-key", pki["server.key"], "--admin-tls-ca", pki["ca.pem"]])
    url = f"https://{LOOPBACK}:{daemon.admin_port}"
    answer = httpx.get(url + "/kafka/v3/clusters", verify=_context(pki, "client"), timeout=10)
    assert answer.status_code == 200 and answer.json()["data"][0]["cluster_id"]
    for refused in (None, "forged"):  # no certificate, or one from another CA: the handshake fails
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/kafka/v3/clusters", verify=_context(pki, refused), timeout=10)
    with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets no API
        httpx.get(f"http://{LOOPBACK}:{daemon.admin_port}/kafka/v3/clusters", timeout=10)
    # The CLI, as an operator runs it.
    result = daemon.cli("link", "list", "--json", "--admin", url, "--admin-ca-file", pki["ca.pem"], "--admin-cert", pki["client.pem"], "--admin-key", pki["client.key"])
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    result = daemon.cli("link", "list", "--admin", url, "--admin-ca-file", pki["ca.pem"])
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.timeout(60)
def test_half_configured_tls_is_refused_at_startup(linkd_factory, tmp_path):
    pki = _write_pki(tmp_path)
    daemon = linkd_factory(start=False)
    common = ["serve", "--data-dir", str(daemon.data_dir), "--listener", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    for extra, expected in ((["--admin-tls-cert", pki["server.pem"]], "go together"),
                            (["--admin-tls-ca", pki["ca.pem"]], "needs --admin-tls-cert"),
                            (["--admin-tls-cert", str(tmp_path / "nope.pem"), "--admin-tls-key", pki["server.key"]], "no such file"),
                            (["--admin-tls-cert", pki["server.pem"], "--admin-tls-key", pki["client.key"]], "not a usable PEM certificate and key"),
                            (["--admin-tls-cert", pki["server.pem"], "--admin-tls-key", pki["server.key"], "--admin-tls-ca", pki["server.key"]], "not a usable PEM CA bundle")):
        result = daemon.cli(*common, *extra)
        assert result.returncode == 2 and expected in result.stderr, result.stderr
