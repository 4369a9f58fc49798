"""Derived identifiers: the same inputs always give the same ids, so replay is exact."""

from __future__ import annotations

import hashlib
import uuid

#: The namespace of every id Procession derives (uuid5).
NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5c9e-8a10-2d4f6b8e0a13")


_PREFIX = NAMESPACE.bytes


def derive_id(*parts: object) -> str:
    """A uuid5 of the parts, joined unambiguously.

    Example:
        >>> derive_id("rebase:42", "evt-1", 0) == derive_id("rebase:42", "evt-1", 0)
        True
        >>> derive_id("a") == str(uuid.uuid5(NAMESPACE, "a"))
        True
    """
    name = "\x1f".join(map(str, parts)).encode()
    digest = bytearray(hashlib.sha1(_PREFIX + name, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def unit_fraction(*parts: object) -> float:
    """A number in [0, 1) derived from the parts: deterministic 'randomness' for jitter.

    Example:
        >>> 0.0 <= unit_fraction("task-1", 2) < 1.0
        True
    """
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
