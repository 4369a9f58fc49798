"""The wire: record types, envelopes, codecs and topic layout."""

from ._codec import DEFAULT_CODEC as DEFAULT_CODEC
from ._codec import Codec as Codec
from ._layout import Topics as Topics
from ._layout import TopicSpec as TopicSpec
from ._records import CancelMode as CancelMode
from ._records import CancelRequested as CancelRequested
from ._records import CompensationPlanned as CompensationPlanned
from ._records import Decided as Decided
from ._records import DomainEvent as DomainEvent
from ._records import InputIgnored as InputIgnored
from ._records import MachinesClosed as MachinesClosed
from ._records import MachinesCreated as MachinesCreated
from ._records import ProcessCancelled as ProcessCancelled
from ._records import ProcessCompleted as ProcessCompleted
from ._records import ProcessFailed as ProcessFailed
from ._records import ProcessMigrated as ProcessMigrated
from ._records import ProcessParked as ProcessParked
from ._records import ProcessResumed as ProcessResumed
from ._records import ProcessStarted as ProcessStarted
from ._records import ProcessStopping as ProcessStopping
from ._records import Record as Record
from ._records import ResumeRequested as ResumeRequested
from ._records import RetryRequested as RetryRequested
from ._records import TaskCompleted as TaskCompleted
from ._records import TaskFailed as TaskFailed
from ._records import TaskMode as TaskMode
from ._records import TimerFired as TimerFired
from ._records import TimerScheduled as TimerScheduled
from ._records import TransitionPlanned as TransitionPlanned

__all__ = [
    "DEFAULT_CODEC",
    "CancelMode",
    "CancelRequested",
    "Codec",
    "CompensationPlanned",
    "Decided",
    "DomainEvent",
    "InputIgnored",
    "MachinesClosed",
    "MachinesCreated",
    "ProcessCancelled",
    "ProcessCompleted",
    "ProcessFailed",
    "ProcessMigrated",
    "ProcessParked",
    "ProcessResumed",
    "ProcessStarted",
    "ProcessStopping",
    "Record",
    "ResumeRequested",
    "RetryRequested",
    "TaskCompleted",
    "TaskFailed",
    "TaskMode",
    "TimerFired",
    "TimerScheduled",
    "TopicSpec",
    "Topics",
    "TransitionPlanned",
]
