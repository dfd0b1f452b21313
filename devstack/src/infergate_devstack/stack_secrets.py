"""The local stack's secrets: made on its first start, kept in `<data dir>/secrets.json` (mode
0600, never printed) and reused by every later start on that data directory.

`python -m json.tool .data/secrets.json` shows them (the README says so): the MongoDB and Redis
passwords are what an operator needs to look into the stores by hand.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StackSecrets:
    internal_token: str
    key_derivation_secret: str
    redis_gateway_password: str
    redis_admin_password: str
    mongo_root_password: str
    mongo_auth_password: str
    mongo_usage_password: str


def load_or_create(path: Path) -> StackSecrets:
    """The stack's secrets, made (each 32 random bytes) when `path` does not hold them yet."""
    names = [f.name for f in dataclasses.fields(StackSecrets)]
    stored: dict[str, str] = {}
    if path.exists():
        stored = {k: v for k, v in json.loads(path.read_text()).items() if k in names}
    if all(name in stored for name in names):
        return StackSecrets(**stored)
    values = {name: stored.get(name) or secrets.token_urlsafe(32) for name in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(values, out, indent=2)
    path.chmod(0o600)
    return StackSecrets(**values)
