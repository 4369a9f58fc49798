"""Procession: process managers (orchestrated sagas) on Kafka and in memory.

Define a saga with :mod:`procession.sagas`, register handlers in an
:class:`App`, and run it with a :class:`Runtime` (in memory by default)::

    app = App([rebase_saga()], {"CloseInstance": close_instance})
    async with Runtime(app) as rt:
        await rt.publish(RebaseFailed(rebase_id="r1", instances=["A", "B", "C"]))
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import CoPartitionError as CoPartitionError
from ._errors import DecodeError as DecodeError
from ._errors import DefinitionError as DefinitionError
from ._errors import DefinitionMismatchError as DefinitionMismatchError
from ._errors import FencedError as FencedError
from ._errors import ProcessionError as ProcessionError
from ._errors import RegistrationError as RegistrationError
from ._errors import TaskError as TaskError
from ._errors import TransactionAbortedError as TransactionAbortedError
from ._errors import UnknownEventTypeError as UnknownEventTypeError
from ._errors import UnknownVersionError as UnknownVersionError
from .sagas import ForEach as ForEach
from .sagas import Machine as Machine
from .sagas import Migration as Migration
from .sagas import RetryPolicy as RetryPolicy
from .sagas import Saga as Saga
from .sagas import State as State
from .sagas import Task as Task
from .sagas import Versions as Versions
from .sagas import all_of as all_of
from .sagas import any_of as any_of
from .sagas import at_least as at_least
from .sagas import mermaid as mermaid
from .sagas import replay_check as replay_check
from .sagas import steps as steps

if TYPE_CHECKING:
    from procession.workers import App as App
    from procession.workers import MemoryTransport as MemoryTransport
    from procession.workers import Runtime as Runtime
    from procession.workers import TaskCall as TaskCall
    from procession.workers import VirtualClock as VirtualClock

_RUNTIME = frozenset({"App", "MemoryTransport", "Runtime", "TaskCall", "VirtualClock"})


def __getattr__(name: str) -> Any:
    # The runtimes load on first use, so importing the pure core pulls in no asyncio.
    if name in _RUNTIME:
        return getattr(importlib.import_module("procession.workers"), name)
    raise AttributeError(f"module 'procession' has no attribute {name!r}")


__all__ = [
    "App",
    "CoPartitionError",
    "DecodeError",
    "DefinitionError",
    "DefinitionMismatchError",
    "FencedError",
    "ForEach",
    "Machine",
    "MemoryTransport",
    "Migration",
    "ProcessionError",
    "RegistrationError",
    "RetryPolicy",
    "Runtime",
    "Saga",
    "State",
    "Task",
    "TaskCall",
    "TaskError",
    "TransactionAbortedError",
    "UnknownEventTypeError",
    "UnknownVersionError",
    "Versions",
    "VirtualClock",
    "all_of",
    "any_of",
    "at_least",
    "mermaid",
    "replay_check",
    "steps",
]
