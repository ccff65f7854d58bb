"""nestling's own digests (code, environment, a manifest's key): the first 16 hex digits of a SHA-256, short
enough for a table column, long enough (64 bits) never to collide among one person's snapshots."""

from __future__ import annotations

import hashlib

DIGEST_CHARS = 16


def short_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
