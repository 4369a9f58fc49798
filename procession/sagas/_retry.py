"""Retry policy: how often a task is tried and how long to wait between attempts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ._ids import unit_fraction


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter derived from the task id (never random).

    ``retry_on`` and ``give_up_on`` are exception classes the worker checks a
    handler's error against; a :class:`procession.TaskError` says it directly.

    Example:
        >>> policy = RetryPolicy(max_attempts=3, initial=timedelta(seconds=1), jitter=0)
        >>> policy.delay_ms("task-1", attempt=1), policy.delay_ms("task-1", attempt=2)
        (1000, 2000)
    """

    max_attempts: int = 3
    initial: timedelta = timedelta(seconds=1)
    multiplier: float = 2.0
    maximum: timedelta = timedelta(minutes=5)
    jitter: float = 0.2
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")

    def delay_ms(self, task_id: str, attempt: int) -> int:
        """Milliseconds to wait after failed ``attempt`` before the next one."""
        base = self.initial.total_seconds() * 1000 * self.multiplier ** (attempt - 1)
        base = min(base, self.maximum.total_seconds() * 1000)
        spread = (2 * unit_fraction(task_id, attempt) - 1) * self.jitter
        return max(0, round(base * (1 + spread)))

    def retryable(self, error: BaseException) -> bool:
        """Whether a handler's error is worth another attempt under this policy."""
        if isinstance(error, self.give_up_on):
            return False
        return isinstance(error, self.retry_on)


NO_RETRY = RetryPolicy(max_attempts=1, initial=timedelta(0), jitter=0)
