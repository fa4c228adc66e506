"""Link secrets at rest: the password-type keys of a link config, sealed with AES-GCM under the operator's key.

The key is 32 random bytes in a file the operator provides (``linkd serve --secrets-key-file``; make one
with ``linkd secrets generate-key``), as Kafka's ``password.encoder.secret`` protects dynamic passwords.
A link's row in ``control.db`` then holds

    {"format": "sealed-v1", "key_id": "<16 hex>", "config": {public keys}, "secrets": {key: base64(nonce + ciphertext)}}

Each secret is bound to its link and key name (AES-GCM associated data), so a sealed value copied to
another link or key does not open. ``key_id`` (a digest of the key, never the key) tells a wrong key from
a damaged value. Rows written before sealing existed are a flat JSON object; they load as they are and
are sealed the next time a key is available.

A daemon without the right key cannot read a sealed link: that link is not started and says why; other
links keep working.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets as random_source
from pathlib import Path

from .client import SourceUnavailable
from .security import HIDDEN, SENSITIVE_KEYS

FORMAT = "sealed-v1"
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretsKeyError(ValueError):
    """The key file cannot be used (missing, unreadable, wrong size)."""


class SecretsUnavailable(SourceUnavailable):
    """A link's secrets cannot be read with the key this daemon has (or has not)."""

    link_error = "SECRETS_UNAVAILABLE"


class SecretsKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretsKeyError(f"a secrets key is {KEY_BYTES} bytes, got {len(key)}")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"linkd secrets key id\0" + key).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: str | Path) -> SecretsKey:
        """32 raw bytes, or the same as base64 or hex text (what ``generate-key`` writes)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SecretsKeyError(f"cannot read secrets key file {path}: {exc.strerror or exc}") from None
        if len(data) == KEY_BYTES:
            return cls(data)
        text = data.strip()
        for decode in (lambda t: base64.b64decode(t, validate=True), bytes.fromhex):
            try:
                key = decode(text.decode("ascii"))
            except (ValueError, binascii.Error, UnicodeDecodeError):
                continue
            if len(key) == KEY_BYTES:
                return cls(key)
        raise SecretsKeyError(f"secrets key file {path} holds no {KEY_BYTES}-byte key (raw, base64 or hex)")

    def seal(self, link: str, key: str, value: str) -> str:
        nonce = random_source.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, value.encode(), _aad(link, key))
        return base64.b64encode(nonce + sealed).decode()

    def open(self, link: str, key: str, sealed: str) -> str:
        from cryptography.exceptions import InvalidTag

        raw = base64.b64decode(sealed)
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(link, key)).decode()
        except InvalidTag:
            raise SecretsUnavailable(f"link '{link}': the sealed value of {key} does not open with this key (damaged or moved)") from None


def _aad(link: str, key: str) -> bytes:
    return f"linkd link secret\0{link}\0{key}".encode()


def generate_key_file(path: str | Path) -> None:
    """Write a new random key as base64 text to ``path`` (created 0600; never overwrites)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(random_source.token_bytes(KEY_BYTES)).decode() + "\n")


def has_secrets(config: dict[str, str]) -> bool:
    return any(k in SENSITIVE_KEYS and v for k, v in config.items())


def seal_config(link: str, config: dict[str, str], key: SecretsKey | None) -> dict:
    """What the store keeps for ``config``: a flat object when it has no secrets, sealed otherwise."""
    if not has_secrets(config):
        return dict(config)
    if key is None:
        names = ", ".join(sorted(k for k in config if k in SENSITIVE_KEYS))
        raise SecretsKeyError(f"the link config holds secrets ({names}); start linkd with --secrets-key-file so they are stored encrypted")
    public = {k: v for k, v in config.items() if k not in SENSITIVE_KEYS}
    sealed = {k: key.seal(link, k, v) for k, v in config.items() if k in SENSITIVE_KEYS}
    return {"format": FORMAT, "key_id": key.key_id, "config": public, "secrets": sealed}


def is_sealed(stored: dict) -> bool:
    return stored.get("format") == FORMAT and isinstance(stored.get("secrets"), dict)


def open_config(link: str, stored: dict, key: SecretsKey | None) -> dict[str, str]:
    """The link config from its stored form; SecretsUnavailable when the key is missing or another."""
    if not is_sealed(stored):
        return dict(stored)
    if key is None:
        raise SecretsUnavailable(f"link '{link}' has encrypted secrets ({', '.join(sorted(stored['secrets']))}) and linkd was started without --secrets-key-file; the link is not started")
    if stored.get("key_id") != key.key_id:
        raise SecretsUnavailable(f"link '{link}' was sealed with another secrets key (key id {stored.get('key_id')}, this daemon has {key.key_id}); the link is not started")
    return {**stored["config"], **{k: key.open(link, k, v) for k, v in stored["secrets"].items()}}


def public_view(stored: dict) -> dict[str, str]:
    """The config with every secret as [hidden], readable without the key (for a link that is locked)."""
    if not is_sealed(stored):
        return {k: (HIDDEN if k in SENSITIVE_KEYS else v) for k, v in stored.items()}
    return {**stored["config"], **dict.fromkeys(stored["secrets"], HIDDEN)}


def rekey(link: str, stored: dict, old: SecretsKey | None, new: SecretsKey) -> dict:
    """``stored`` sealed under ``new`` (plaintext rows, from before sealing, need no old key)."""
    return seal_config(link, open_config(link, stored, old), new)


def rotate_data_dir(data_dir: Path, old_key_file: str | None, new_key_file: str) -> int:
    """Re-seal every link's secrets in ``data_dir``'s control.db under the new key, in one transaction.
    The daemon must be stopped: the data dir's lock is taken (non-blocking) for the duration."""
    import fcntl
    import json
    import sqlite3

    db_path = data_dir / "control.db"
    if not db_path.is_file():
        raise SecretsKeyError(f"{db_path} does not exist")
    old = SecretsKey.from_file(old_key_file) if old_key_file else None
    new = SecretsKey.from_file(new_key_file)
    with open(data_dir / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SecretsKeyError(f"a linkd daemon is running on {data_dir}; stop it before rotating the key") from None
        db = sqlite3.connect(db_path, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT name, config FROM links").fetchall()
            for name, stored in rows:
                db.execute("UPDATE links SET config = ? WHERE name = ?", (json.dumps(rekey(name, json.loads(stored), old, new)), name))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
    return len(rows)
