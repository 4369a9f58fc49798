"""Inputs that clients (not the decision) write, with derived ids."""

from __future__ import annotations

from procession.topics._records import (
    CancelMode,
    CancelRequested,
    ResumeRequested,
    RetryRequested,
)

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


def resume_request(process_id: str, now_ms: int, reason: str) -> ResumeRequested:
    """A request to resume a parked process (each request its own, by time)."""
    return ResumeRequested(
        event_id=derive_id(process_id, "resume", now_ms, reason),
        process_id=process_id,
        correlation_id=process_id,
        time_ms=now_ms,
        reason=reason,
    )


def retry_request(process_id: str, now_ms: int, machine_id: str, reason: str) -> RetryRequested:
    """A request to run the next attempt of a failed task now."""
    return RetryRequested(
        event_id=derive_id(process_id, "retry", now_ms, machine_id, reason),
        process_id=process_id,
        correlation_id=process_id,
        time_ms=now_ms,
        machine_id=machine_id,
        reason=reason,
    )
