"""What every long-lived part of the runtime shares: it can die, and says so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from procession._errors import FencedError, one_line

from ._port import Consumer, TopicPartition
from ._stats import Stats

log = logging.getLogger("procession")


class Component:
    """A router, processor or worker. When it cannot go on, ``crashed`` gets the
    error, one line is logged, and whoever runs it (the CLI, a :class:`Runtime`)
    stops the process: nothing dies quietly inside a living process.

    Example::

        await worker.start()
        error = await worker.crashed  # resolves only if the worker dies
    """

    name = "component"
    crashed: asyncio.Future[BaseException] | None = None
    stats: Stats

    def gauges(self) -> dict[str, float]:
        """The state of the moment, for ``/metrics``; each component adds its own."""
        return {}

    @staticmethod
    def lag_of(consumer: Consumer | None) -> dict[str, float]:
        """``consumer_lag`` when the consumer knows it."""
        lag = consumer.lag() if consumer is not None else None
        return {} if lag is None else {"consumer_lag": lag}

    def arm(self) -> None:
        """Called by ``start()``: from now on a death is reported."""
        if self.crashed is None or self.crashed.done():
            self.crashed = asyncio.get_running_loop().create_future()

    def died(self, error: BaseException) -> None:
        """Report that this component stopped for good (the first error wins)."""
        if self.crashed is None:
            self.crashed = asyncio.get_running_loop().create_future()
        if not self.crashed.done():
            log.error("%s stopped: %s", self.name, one_line(error))
            log.debug("%s stopped here", self.name, exc_info=error)  # the traceback, at DEBUG
            self.crashed.set_result(error)

    def ready(self) -> bool:
        """Started, and not stopped by a failure. Each component adds its own
        conditions (a member of its group, every assigned partition taken over
        and, for the processor, restored); ``/readyz`` reports it."""
        return self.crashed is not None and self.failure is None

    def member_ready(
        self, consumer: Consumer | None, unclaimed: Collection[TopicPartition]
    ) -> bool:
        """Started, not failed, a member of its group, and no assigned partition
        left to take over: what every component's :meth:`ready` needs."""
        alive = Component.ready(self)
        return alive and consumer is not None and consumer.joined() and not unclaimed

    @property
    def failure(self) -> BaseException | None:
        """The error that stopped this component, or None while it runs."""
        if self.crashed is not None and self.crashed.done():
            return self.crashed.result()
        return None

    def fenced(self, error: FencedError, *, still_ours: bool) -> None:
        """A producer of ours was fenced. Once its partition moved on that is the
        rebalance at work; while the group still says it is ours, a newer owner
        exists and this one is a zombie: it stops."""
        if still_ours:
            self.died(error)
        else:
            log.info("%s: %s after its partition moved on", self.name, error)
