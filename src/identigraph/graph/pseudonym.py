"""Keyed pseudonymisation of emails and phones (HMAC-SHA256).

A keyed hash, not a plain one: anyone can hash a list of known phone numbers, but without the key the
graph's ids cannot be reversed that way. The same key must be used by every stage, so it is resolved
here from config/env/Secrets Manager, or — in the local profile only — created once in the data dir.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from identigraph.config import Settings
from identigraph.errors import PiiKeyError, SchemaError

# the normalisation before hashing is the canonical one every writer shares (graph.canonical)
from identigraph.graph.canonical import normalise_email, normalise_phone

_DIGEST_HEX = 32  # 128 bits: collision-free at any realistic customer base, half the id length
_MIN_KEY_BYTES = 16


class Pseudonymiser:
    """Keeps the key in one object that never prints it, so every stage hashes emails and phones the same way."""

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise PiiKeyError(f"pii key: must be at least {_MIN_KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    def __repr__(self) -> str:  # never show the key
        return "Pseudonymiser(key=***)"

    def digest(self, kind: str, normalised: str) -> str:
        mac = hmac.new(self._key, f"{kind}:{normalised}".encode(), hashlib.sha256)
        return mac.hexdigest()[:_DIGEST_HEX]

    def email(self, raw: str) -> str:
        return self.digest("email", normalise_email(raw))

    def phone(self, raw: str) -> str:
        return self.digest("phone", normalise_phone(raw))

    def pseudonymise(self, label: str, raw: str) -> str:
        if label == "email":
            return self.email(raw)
        if label == "phone":
            return self.phone(raw)
        raise SchemaError(f"label: {label!r} is not a PII identifier")


def key_file(settings: Settings) -> Path:
    """The local profile keeps its generated key under the data dir, so every local stage finds the same one."""
    return settings.data_path / "secrets" / "pii.key"


def _from_secrets_manager(secret_id: str, region: str | None) -> str:
    import boto3

    client = boto3.client("secretsmanager", region_name=region)
    return client.get_secret_value(SecretId=secret_id)["SecretString"]


def resolve_key(settings: Settings, environ: dict[str, str] | None = None) -> bytes:
    """Config, then the environment, then Secrets Manager; the local profile may create a key file."""
    env = os.environ if environ is None else environ
    pii = settings.pii
    if pii.key:
        return pii.key.encode()
    if env.get(pii.key_env):
        return env[pii.key_env].encode()
    if pii.secret_id:
        return _from_secrets_manager(pii.secret_id, settings.graph.region or settings.queues.region).encode()
    if settings.profile != "local":
        raise PiiKeyError(
            f"no pseudonymisation key: the {settings.profile} profile needs pii.key, ${pii.key_env} or "
            f"pii.secret_id; it never creates one, because a new key would split every identity in two"
        )
    path = key_file(settings)
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write aside, then link into place: two processes starting at once end up with the same key.
    tmp = path.with_name(f".pii.key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


def from_settings(settings: Settings) -> Pseudonymiser:
    """Every stage must hash with the one configured key, so they all build their pseudonymiser here."""
    return Pseudonymiser(resolve_key(settings))
