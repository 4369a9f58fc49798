"""Inputs that clients (not the decision) write, with derived ids."""

from __future__ import annotations

from procession.topics._records import CancelMode, CancelRequested

from ._ids import derive_id


def cancel_request(process_id: str, now_ms: int, mode: CancelMode, reason: str) -> CancelRequested:
    """A cancel request; one per process, mode and reason (a repeat is a duplicate)."""
    return CancelRequested(
        event_id=derive_id(process_id, "cancel", mode, reason),
        process_id=process_id,
        correlation_id=process_id,
        time_ms=now_ms,
        mode=mode,
        reason=reason,
    )
