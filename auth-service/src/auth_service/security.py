"""API key material: generation, hashing and the display prefix. Keys are never stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from infergate_common.validation import is_api_key

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
    """The hash to look a presented key up by; None when it cannot be one of ours (only the
    exact form is: no whitespace is trimmed, so one key never has two spellings)."""
    return hash_api_key(presented) if is_api_key(presented) else None


def revoked_placeholder() -> str:
    """What a revoked user's `keyHash` becomes: unique (the index holds) and never the hex
    SHA-256 of anything (it has a colon), so no presented key can match it."""
    return REVOKED_MARK + secrets.token_hex(32)


def issue_api_key() -> IssuedKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return IssuedKey(key=key, key_hash=hash_api_key(key), display_prefix=key[:_DISPLAY_CHARS])


def derive_api_key(secret: str, *parts: str) -> IssuedKey:
    """The key an idempotent request issues: the same parts always give the same key, and only
    the holder of `secret` can compute it. Nothing about the key is stored, so a retry within
    the idempotency window gets the same key back by deriving it again."""
    message = "\x1f".join(parts).encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    key = KEY_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return IssuedKey(key=key, key_hash=hash_api_key(key), display_prefix=key[:_DISPLAY_CHARS])


def request_fingerprint(*parts: str) -> str:
    """The id of an idempotency record: a digest of what the request was (never the key)."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
