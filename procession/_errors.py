"""Every exception Procession raises, in one place.

Each one is a dataclass that carries the context a reader needs to act on it.
"""

from __future__ import annotations

from dataclasses import dataclass


def one_line(exc: BaseException) -> str:
    """An exception as one line: Procession's own say what they are; others get their type.

    Example:
        >>> one_line(ValueError("bad\\nthing"))
        'ValueError: bad thing'
    """
    text = " ".join(str(exc).split())
    if isinstance(exc, ProcessionError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class ProcessionError(Exception):
    """Base class of Procession's errors."""

    def __str__(self) -> str:
        return self.message()

    def message(self) -> str:
        return self.__class__.__name__


@dataclass
class SettingError(ProcessionError):
    """A setting (mostly an environment variable) that cannot work; the reason
    names it. Example: ``KAFKA_SECURITY_PROTOCOL='TLS' is not one of ...``."""

    reason: str

    def message(self) -> str:
        return self.reason


@dataclass
class DefinitionError(ProcessionError):
    """A saga definition that makes no sense.

    Example: ``DefinitionError("rebase", "instance", "transition 'close'", "targets
    unknown state 'Gone'")`` reads ``saga 'rebase', machine 'instance': transition
    'close' targets unknown state 'Gone'``.
    """

    saga: str
    machine: str | None
    part: str
    problem: str

    def message(self) -> str:
        where = f"saga {self.saga!r}"
        if self.machine is not None:
            where += f", machine {self.machine!r}"
        return f"{where}: {self.part} {self.problem}"


@dataclass
class DefinitionMismatchError(ProcessionError):
    """A running process met a definition that has no place for it: a version
    that is not registered, or a machine, state or transition it no longer has.

    Example: ``DefinitionMismatchError("rebase:42", "rebase", 2, "machine 'instance'
    has no transition 'Working->Closing'")``.
    """

    process_id: str
    saga: str
    version: int
    problem: str

    def message(self) -> str:
        return (
            f"process {self.process_id!r} (saga {self.saga!r} v{self.version}): {self.problem}; "
            "a running process decides with the version it started on: register "
            f"v{self.version} in the app (beside the others), or a Migration from it"
        )


@dataclass
class UnknownVersionError(ProcessionError):
    """Running processes of a saga version the app does not register: the
    processor refuses to decide for them rather than park each one.

    Example: ``UnknownVersionError("rebase", 1, "v2", ["rebase:42"])``.
    """

    saga: str
    version: int
    registered: str
    process_ids: list[str]

    def message(self) -> str:
        n = len(self.process_ids)
        return (
            f"saga {self.saga!r}: {n} running process{'es' if n > 1 else ''} on v{self.version} "
            f"(e.g. {self.process_ids[0]!r}), which this app does not register (it has "
            f"{self.registered}); register v{self.version} beside the others, or a Migration "
            f"from v{self.version}"
        )


@dataclass
class RegistrationError(ProcessionError):
    """An application that cannot run, e.g. a task type with no handler."""

    saga: str
    problem: str

    def message(self) -> str:
        return f"saga {self.saga!r}: {self.problem}"


@dataclass
class DecodeError(ProcessionError):
    """A record that could not be decoded from the wire."""

    reason: str
    record_type: str | None = None

    def message(self) -> str:
        kind = f" ({self.record_type})" if self.record_type else ""
        return f"cannot decode record{kind}: {self.reason}"


@dataclass
class UnknownEventTypeError(ProcessionError):
    """A domain event type no registered saga knows."""

    event_type: str

    def message(self) -> str:
        return f"no saga knows the event type {self.event_type!r}"


@dataclass
class TaskError(ProcessionError):
    """Raised by a task handler to say whether a failure is worth retrying.

    Example: ``raise TaskError("card declined", retryable=False)``.
    """

    reason: str
    retryable: bool = True

    def message(self) -> str:
        return self.reason


@dataclass
class FencedError(ProcessionError):
    """A newer owner of the same transactional id took over; this one must stop."""

    transactional_id: str

    def message(self) -> str:
        return (
            f"producer {self.transactional_id!r} was fenced by a newer instance "
            "(or the broker aborted its transaction after transaction.timeout.ms)"
        )


@dataclass
class WriterFailedError(ProcessionError):
    """A transactional producer that can neither commit nor abort: its component stops."""

    transactional_id: str
    reason: str

    def message(self) -> str:
        return f"producer {self.transactional_id!r} cannot go on: {self.reason}"


@dataclass
class UnroutableError(ProcessionError):
    """A domain event the router cannot route (its rule raised, or it is too large)."""

    reason: str

    def message(self) -> str:
        return self.reason


@dataclass
class UnwritableError(ProcessionError):
    """What a process decided cannot be written (too large, not JSON): it is parked."""

    reason: str

    def message(self) -> str:
        return self.reason


@dataclass
class TransactionAbortedError(ProcessionError):
    """A transaction could not commit; nothing of it is visible."""

    reason: str

    def message(self) -> str:
        return f"transaction aborted: {self.reason}"


@dataclass
class CoPartitionError(ProcessionError):
    """The changelog is not partitioned like the process topic it belongs to."""

    process_topic: str
    process_partitions: int
    changelog_topic: str
    changelog_partitions: int

    def message(self) -> str:
        return (
            f"topic {self.changelog_topic!r} has {self.changelog_partitions} partitions but "
            f"{self.process_topic!r} has {self.process_partitions}: they must be co-partitioned"
        )


@dataclass
class RecordTooLargeError(ProcessionError):
    """A record over its topic's ``max.message.bytes``: the broker would refuse it."""

    topic: str
    size: int
    limit: int
    what: str = "a record"

    def message(self) -> str:
        return (
            f"{self.what} of {self.size} bytes is over {self.topic!r}'s "
            f"max.message.bytes ({self.limit})"
        )


@dataclass
class TopicsError(ProcessionError):
    """Topics that are missing or not configured as the application needs them."""

    problems: list[str]

    def message(self) -> str:
        return (
            "topics are not as the application needs them: "
            + "; ".join(self.problems)
            + " (`procession topics create MODULE:APP` creates missing topics; "
            "`procession topics check MODULE:APP` lists what differs)"
        )


@dataclass
class AppSpecError(ProcessionError):
    """A ``MODULE:APP`` that names no usable application (the command line's fault)."""

    spec: str
    problem: str

    def message(self) -> str:
        return f"cannot load app {self.spec!r}: {self.problem}"


@dataclass
class KafkaUnreachableError(ProcessionError):
    """No broker answered at the bootstrap servers."""

    servers: str
    reason: str

    def message(self) -> str:
        return f"cannot reach Kafka at {self.servers} ({self.reason})"

    @classmethod
    def silent(cls, servers: str, timeout_s: float) -> KafkaUnreachableError:
        """Nothing answered within ``timeout_s``.

        Example:
            >>> str(KafkaUnreachableError.silent("k:9092", 30.0))
            'cannot reach Kafka at k:9092 (no answer within 30 s)'
        """
        return cls(servers, f"no answer within {timeout_s:g} s")
