"""API key material: generation, hashing and the display prefix. Keys are never stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

KEY_PREFIX = "sk_"
_DISPLAY_CHARS = 10
REVOKED_MARK = "revoked:"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: str
    key_hash: str
    display_prefix: str


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the key: keys are 256 random bits, so a fast hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def lookup_hash(presented: str) -> str | None:
    """The hash to look a presented key up by; None when it cannot be one of ours."""
    return hash_api_key(presented) if presented.startswith(KEY_PREFIX) else None


def revoked_placeholder() -> str:
    """What a revoked user's `keyHash` becomes: unique (the index holds) and never the hex
    SHA-256 of anything (it has a colon), so no presented key can match it."""
    return REVOKED_MARK + secrets.token_hex(32)


def issue_api_key() -> IssuedKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return IssuedKey(key=key, key_hash=hash_api_key(key), display_prefix=key[:_DISPLAY_CHARS])
