"""The listener's SASL mechanisms alone (linkd/broker/sasl.py, oauthbearer.py), sans-IO: RFC 7677's
SCRAM-SHA-256 example exchange, refusals, and PLAIN against the SCRAM credentials."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkd import scram
from linkd.broker.oauthbearer import OAuthBearerUnsecuredServer, UnsecuredValidatorOptions
from linkd.broker.sasl import AuthenticationFailed, PlainServer, ScramServer
from linkd.broker.users import UserStore, credential_from_password, credential_from_salted
from linkd.controlstore import ControlStore
from linkd.link.sasl import ScramClient, unsecured_jws

# RFC 7677 section 3.
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


@pytest.fixture
def users(tmp_path) -> UserStore:
    store = UserStore(ControlStore(tmp_path / "control.db"))
    salted = scram.salted_password("sha256", b"pencil", RFC_SALT, 4096)
    store.upsert("user", "SCRAM-SHA-256", credential_from_salted("SCRAM-SHA-256", RFC_SALT, salted, 4096))
    return store


def test_scram_sha_256_server_follows_rfc_7677_example(users):
    server = ScramServer("SCRAM-SHA-256", users, nonce=RFC_SERVER_NONCE)
    assert server.step(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.step(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL
    assert server.complete and server.principal == "User:user"


def test_the_stored_credential_holds_no_password_or_salted_password(users, tmp_path):
    salted = scram.salted_password("sha256", b"pencil", RFC_SALT, 4096)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("control.db*"))
    assert b"pencil" not in raw and salted not in raw


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_our_client_and_server_agree_and_a_wrong_password_is_refused(users, mechanism):
    users.upsert("alice", mechanism, credential_from_password(mechanism, "s3cret"))
    client, server = ScramClient(mechanism, "alice", "s3cret"), ScramServer(mechanism, users)
    client.respond(server.step(client.respond(server.step(client.start()))))
    assert client.complete and server.principal == "User:alice"
    client, server = ScramClient(mechanism, "alice", "wrong"), ScramServer(mechanism, users)
    with pytest.raises(AuthenticationFailed, match="invalid credentials"):
        server.step(client.respond(server.step(client.start())))


@pytest.mark.parametrize(
    "first,message",
    [
        (b"p=tls-unique,,n=user,r=abc", "channel binding is not supported"),
        (b"n,a=other,n=user,r=abc", "authorization id"),
        (b"n,,n=user,r=abc,tokenauth=true", "delegation tokens"),
        (b"n,,n=nobody,r=abc", "Invalid user credentials"),
        (b"n,,r=abc", "no user name"),
    ],
)
def test_scram_client_first_messages_linkd_refuses(users, first, message):
    with pytest.raises(AuthenticationFailed, match=message):
        ScramServer("SCRAM-SHA-256", users).step(first)


def test_a_tampered_nonce_or_channel_binding_in_the_final_message_is_refused(users):
    server = ScramServer("SCRAM-SHA-256", users, nonce=RFC_SERVER_NONCE)
    server.step(RFC_CLIENT_FIRST)
    with pytest.raises(AuthenticationFailed, match="nonce"):
        server.step(RFC_CLIENT_FINAL.replace(b"k0,p", b"k1,p"))
    server = ScramServer("SCRAM-SHA-256", users, nonce=RFC_SERVER_NONCE)
    server.step(RFC_CLIENT_FIRST)
    with pytest.raises(AuthenticationFailed, match="channel binding"):
        server.step(RFC_CLIENT_FINAL.replace(b"c=biws", b"c=eSws"))


def test_plain_checks_the_password_against_the_scram_credential(users):
    server = PlainServer(users)
    server.step(b"\0user\0pencil")
    assert server.pending is not None and not server.complete
    server.finish(server.pending.verify())
    assert server.complete and server.principal == "User:user"
    wrong = PlainServer(users)
    wrong.step(b"\0user\0pen")
    with pytest.raises(AuthenticationFailed, match="Invalid username or password"):
        wrong.finish(wrong.pending.verify())
    with pytest.raises(AuthenticationFailed, match="Invalid username or password"):
        PlainServer(users).step(b"\0nobody\0pencil")
    with pytest.raises(AuthenticationFailed, match="authorization id"):
        PlainServer(users).step(b"admin\0user\0pencil")


def test_unsecured_oauthbearer_checks_expiry_scope_and_subject():
    def message(claims: dict, lifetime_s: int = 60) -> bytes:
        return f"n,,\x01auth=Bearer {unsecured_jws(claims, lifetime_s, now=1000.0)}\x01\x01".encode()

    options = UnsecuredValidatorOptions(required_scope=("kafka",))
    ok = OAuthBearerUnsecuredServer(options, now=lambda: 1010.0)
    assert ok.step(message({"sub": "svc", "scope": "kafka other"})) == b""
    assert ok.complete and ok.principal == "User:svc" and ok.token_expires_ms == 1_060_000
    for claims, lifetime, now, why in [
        ({"sub": "svc", "scope": "kafka"}, 5, 1010.0, "expired"),
        ({"sub": "svc", "scope": "other"}, 60, 1010.0, "required scope kafka"),
        ({"scope": "kafka"}, 60, 1010.0, "no sub claim"),
        ({"sub": "svc", "scope": "kafka"}, 60, 990.0, "iat claim is in the future"),
    ]:
        server = OAuthBearerUnsecuredServer(options, now=lambda now=now: now)
        assert b"invalid_token" in server.step(message(claims, lifetime))
        with pytest.raises(AuthenticationFailed, match=why):
            server.step(b"\x01")


@settings(max_examples=300, deadline=None)
@given(issued=st.floats(min_value=1e9, max_value=4e9, allow_nan=False, allow_infinity=False))
def test_an_unsecured_token_is_valid_in_the_instant_it_is_issued(issued):
    # A broker that reads the token within the millisecond it was made (loopback, an idle core) must not
    # find its iat in the future: the token once carried iat rounded to the nearest millisecond, up to half
    # a millisecond after the issuing instant, and such a read was answered invalid_token.
    token = unsecured_jws({"sub": "svc", "scope": "kafka"}, 20, now=issued)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["iat"] <= issued and claims["exp"] - claims["iat"] == pytest.approx(20)
    server = OAuthBearerUnsecuredServer(UnsecuredValidatorOptions(required_scope=("kafka",)), now=lambda: issued)
    assert server.step(f"n,,\x01auth=Bearer {token}\x01\x01".encode()) == b"", server._failure
    assert server.token_expires_ms == round(claims["exp"] * 1000)


def test_a_token_from_the_current_millisecond_is_not_from_the_future():
    # Another client's token may carry a sub-millisecond iat a little after the broker's clock within the
    # same millisecond; the broker compares whole milliseconds.
    def message(iat: float) -> bytes:
        body = base64.urlsafe_b64encode(json.dumps({"sub": "svc", "iat": iat, "exp": iat + 60}).encode()).rstrip(b"=").decode()
        return f"n,,\x01auth=Bearer eyJhbGciOiJub25lIn0.{body}.\x01\x01".encode()

    assert OAuthBearerUnsecuredServer(UnsecuredValidatorOptions(), now=lambda: 1000.0001).step(message(1000.0009)) == b""
    late = OAuthBearerUnsecuredServer(UnsecuredValidatorOptions(), now=lambda: 1000.0001)
    assert b"invalid_token" in late.step(message(1000.0011))
