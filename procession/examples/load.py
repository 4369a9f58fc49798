"""``python -m procession.examples.load``: publish rebases for the demo app.

Publishes ``--count`` ``RebaseFailed`` events (ids ``<run>-0`` ...) to the
``procession-demo`` topics, through :class:`~procession.publish.SyncPublisher`,
in batches, and exits. docker-compose.yml runs it as its load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from procession.examples import RebaseFailed
from procession.examples.apps import rebase_app
from procession.publish import Event, SyncPublisher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m procession.examples.load")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--run", default=f"load{int(time.time())}", help="rebase id prefix")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    args = parser.parse_args(argv)
    if not args.bootstrap_servers:
        parser.error("--bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS is needed")
    if args.count < 1:
        parser.error("--count must be at least 1")
    events = [
        Event(RebaseFailed(rebase_id=f"{args.run}-{i}", instances=["A", "B", "C"]))
        for i in range(args.count)
    ]
    with SyncPublisher(rebase_app().topics, args.bootstrap_servers) as publisher:
        for start in range(0, len(events), 100):
            publisher.publish_many(events[start : start + 100])
    print(f"published {args.count} rebases ({args.run}-0 ...)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
