"""Settings both Kafka clients share (no client is imported here, so either
extra works alone)."""

from __future__ import annotations

import os

from ._port import MAX_RECORD_BYTES

#: How long a transactional producer waits before retrying a refused request.
#: A transaction that starts right after a commit is refused with
#: CONCURRENT_TRANSACTIONS until the broker has written the previous commit's
#: markers; with aiokafka's default of 100 ms that wait dominated every hop
#: (docs/benchmarks.md). Kafka's Java producer retries that case after 20 ms.
TXN_RETRY_BACKOFF_MS = int(os.environ.get("PROCESSION_TXN_RETRY_BACKOFF_MS", "10"))

#: How long a transaction may stay open before the broker aborts it. A writer
#: that dies mid-transaction blocks ``read_committed`` readers of its partitions
#: until its replacement fences it or this passes; Kafka's default is 60 s.
TRANSACTION_TIMEOUT_MS = int(os.environ.get("PROCESSION_TRANSACTION_TIMEOUT_MS", "10000"))

#: Seconds after which a transaction still in flight is judged stuck and its
#: producer failed (the component stops, the process exits and is restarted), on
#: either client. librdkafka can block in ``send_offsets_to_transaction`` past
#: its timeout once the group coordinator went away (confluentinc/librdkafka#5456);
#: seen after a broker restart, holding a worker's revoke, and so its whole group,
#: for minutes. aiokafka retries a request of a transaction (AddPartitionsToTxn)
#: to a broker that is gone for ever: a worker whose broker died kept its results
#: for minutes, alive and doing nothing. Twice the transaction timeout: longer
#: than any legitimate round (each call is bounded by the timeout), and the broker
#: aborts a transaction open for longer than the timeout. A transaction that does
#: commit after all is safe: whoever takes its partitions over reads their
#: offsets with ``require_stable``, which waits for it, before it reads anything.
STUCK_S = float(os.environ.get("PROCESSION_TXN_STUCK_S", str(2 * TRANSACTION_TIMEOUT_MS / 1000)))

#: How long starting a producer waits for a broker out of reach (a restart)
#: before its component gives up.
START_DEADLINE_S = float(os.environ.get("PROCESSION_START_DEADLINE_S", "60"))

#: How long a member may go without a poll before it leaves its group (both
#: clients). A member with no room keeps polling, taking nothing
#: (``Consumer.fetch(0, 0)``), so this bounds a stuck loop, not a long task.
#: librdkafka wants it at least the session timeout.
MAX_POLL_INTERVAL_MS = int(os.environ.get("PROCESSION_MAX_POLL_INTERVAL_MS", "300000"))

#: How long the group waits for a silent member before moving its partitions
#: (Kafka's minimum is 6 s). Shorter recovers a killed replica sooner; longer
#: tolerates a longer-blocked event loop.
SESSION_TIMEOUT_MS = int(os.environ.get("PROCESSION_SESSION_TIMEOUT_MS", "10000"))

#: How long the broker holds a librdkafka member's fetch when it has nothing new
#: (librdkafka's default is 500 ms). A static member restarted after a kill -9
#: had every process completed 1.3-2.8 s after the kill with 100 ms (median
#: 1.8 s, 30 runs) against 1.5-2.8 s (median 2.2 s) with 500 ms; an idle member
#: asks five times as often, which costs the broker next to nothing.
FETCH_WAIT_MS = int(os.environ.get("PROCESSION_FETCH_WAIT_MS", "100"))

#: A member with no room (``fetch(0, 0)``) polls, its partitions paused, only
#: once it has gone this long without a poll (on either client): pausing drops
#: what the client fetched ahead, so pausing at every brief full spell (a busy
#: worker's, many a second) would make every refill wait for the broker.
HOLD_AFTER_S = 1.0

#: The most bytes a producer packs into one record batch for a partition (both
#: clients). A broker refuses a batch over the topic's ``max.message.bytes`` as
#: a whole, records that each fit included, and the transaction could never
#: commit: a topic must take at least this much (``_topic_check`` says so at
#: start). A single record larger than this goes in a batch of its own.
PRODUCER_BATCH_BYTES = 16_384

#: The largest produce request the clients send (librdkafka's ``message.max.bytes``,
#: aiokafka's ``max_request_size``): a record up to ``MAX_RECORD_BYTES`` (16 MiB)
#: and its framing. The broker takes requests up to ``socket.request.max.bytes``
#: (100 MiB by default); each topic's ``max.message.bytes`` is checked before.
MAX_REQUEST_BYTES = MAX_RECORD_BYTES + 64 * 1024

#: A key that is not UTF-8 still makes a str (the bad bytes kept as surrogates),
#: so the record is dead-lettered by whoever checks its key, with its key as it was.
KEY_ERRORS = "surrogateescape"
