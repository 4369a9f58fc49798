"""Derived identifiers: the same inputs always give the same ids, so replay is exact."""

from __future__ import annotations

import hashlib
import uuid

#: The namespace of every id Procession derives (uuid5).
NAMESPACE = uuid.UUID("6f1c2a4e-3b7d-5c9e-8a10-2d4f6b8e0a13")


#: sha1 over the namespace, copied for each id instead of hashing the prefix again.
_SEEDED = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)

#: The RFC 4122 variant digit for each value of the hex digit it replaces.
_VARIANT = dict(zip("0123456789abcdef", "89ab89ab89ab89ab", strict=True))


def _joined(parts: tuple[object, ...]) -> str:
    return "\x1f".join([p if p.__class__ is str else str(p) for p in parts])


def _uuid(x: str) -> str:
    # version 5 in the 13th digit, the variant's two high bits in the 17th
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


def derive_id(*parts: object) -> str:
    """A uuid5 of the parts, joined unambiguously.

    Example:
        >>> derive_id("rebase:42", "evt-1", 0) == derive_id("rebase:42", "evt-1", 0)
        True
        >>> derive_id("a") == str(uuid.uuid5(NAMESPACE, "a"))
        True
    """
    h = _SEEDED.copy()
    h.update(_joined(parts).encode())
    return _uuid(h.hexdigest())


class IdPrefix:
    """Ids of many parts that start alike, the common start hashed once:
    ``IdPrefix(*a).derive(*b) == derive_id(*a, *b)``.

    Example:
        >>> IdPrefix("rebase:42", "evt-1").derive(0) == derive_id("rebase:42", "evt-1", 0)
        True
    """

    __slots__ = ("_h",)

    def __init__(self, *parts: object) -> None:
        self._h = _SEEDED.copy()
        self._h.update((_joined(parts) + "\x1f").encode())

    def derive(self, *parts: object) -> str:
        h = self._h.copy()
        if len(parts) == 1:  # a decision's position: no join to make
            h.update(str(parts[0]).encode())
        else:
            h.update("\x1f".join([p if p.__class__ is str else str(p) for p in parts]).encode())
        x = h.hexdigest()  # as _uuid, inline: this is the hot path of every decision
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


#: The last prefix asked of :func:`prefix` (one entry): a planner derives its
#: decisions' ids from one prefix, and the fold derives their timers' ids from it.
_recent: dict[tuple[str, str | None, int], IdPrefix] = {}


def prefix(process_id: str, cause_id: str | None, seq: int) -> IdPrefix:
    """The id prefix of the decisions taken at ``seq`` on input ``cause_id``.

    Example:
        >>> prefix("p", "e1", 3).derive("m") == derive_id("p", "e1", 3, "m")
        True
    """
    key = (process_id, cause_id, seq)
    found = _recent.get(key)
    if found is None:
        _recent.clear()
        found = _recent[key] = IdPrefix(*key)
    return found


def unit_fraction(*parts: object) -> float:
    """A number in [0, 1) derived from the parts: deterministic 'randomness' for jitter.

    Example:
        >>> 0.0 <= unit_fraction("task-1", 2) < 1.0
        True
    """
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64
