"""The runtimes: router, processor, task workers and timers over a transport.

``KafkaTransport`` loads on first use (it needs the ``kafka`` extra, aiokafka).
"""

from typing import TYPE_CHECKING, Any

from ._app import App as App
from ._app import Handler as Handler
from ._app import TaskCall as TaskCall
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._clock import VirtualClock as VirtualClock
from ._memory import Crash as Crash
from ._memory import MemoryLog as MemoryLog
from ._memory import MemoryTransport as MemoryTransport
from ._port import Batch as Batch
from ._port import Consumer as Consumer
from ._port import Message as Message
from ._port import Outgoing as Outgoing
from ._port import Producer as Producer
from ._port import TopicPartition as TopicPartition
from ._port import Transport as Transport
from ._processor import Processor as Processor
from ._router import Router as Router
from ._runtime import Runtime as Runtime
from ._worker import Worker as Worker

if TYPE_CHECKING:
    from ._kafka import KafkaTransport as KafkaTransport


def __getattr__(name: str) -> Any:
    if name == "KafkaTransport":
        from ._kafka import KafkaTransport  # noqa: PLC0415 - only with the kafka extra

        return KafkaTransport
    raise AttributeError(f"module 'procession.workers' has no attribute {name!r}")


__all__ = [
    "App",
    "Batch",
    "Clock",
    "Consumer",
    "Crash",
    "Handler",
    "KafkaTransport",
    "MemoryLog",
    "MemoryTransport",
    "Message",
    "Outgoing",
    "Processor",
    "Producer",
    "Router",
    "Runtime",
    "SystemClock",
    "TaskCall",
    "TopicPartition",
    "Transport",
    "VirtualClock",
    "Worker",
]
