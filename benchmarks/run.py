"""Run the benchmarks and write their figures into docs/benchmarks.md.

./dev bench              # full run, updates the docs
./dev bench --quick      # tiny sizes, prints only (the CI smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from benchmarks.core import run_core
from benchmarks.kafka import run_kafka
from benchmarks.memory import run_memory

DOC = Path(__file__).parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- in-memory figures: begin -->", "<!-- in-memory figures: end -->"
KBEGIN, KEND = "<!-- kafka figures: begin -->", "<!-- kafka figures: end -->"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rss_after(processes: int) -> dict[str, float]:
    """In a fresh interpreter, so nothing else measured here inflates it."""
    code = (
        "import asyncio, json; from benchmarks.memory import run_memory; "
        f"print(json.dumps(asyncio.run(run_memory({processes}, retain_records=1000))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=DOC.parent.parent,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes; print, do not write docs")
    args = parser.parse_args(argv)
    n_core, n_mem, n_rss = (200, 200, 300) if args.quick else (10_000, 20_000, 100_000)
    core = run_core(n_core)
    mem = asyncio.run(run_memory(n_mem))
    rss = rss_after(n_rss)
    rows = [
        (
            "pure core, decisions/s (one core)",
            f"{core['decisions_per_s']:,.0f}",
            "≥ 20,000",
            f"{core['decisions']:,} decisions of {n_core:,} rebase processes",
        ),
        (
            "in-memory runtime, completed processes/s",
            f"{mem['processes_per_s']:,.0f}",
            "≥ 2,000",
            f"{n_mem:,} rebase processes, 3 async tasks each, ≤ 2,000 in flight",
        ),
        (
            f"in-memory runtime, completed processes/s over {n_rss:,}",
            f"{rss['processes_per_s']:,.0f}",
            "",
            "same, in a fresh process",
        ),
        (
            f"RSS after {n_rss:,} completed processes",
            f"{rss['rss_mib']:,.0f} MiB",
            "",
            f"state released, {rss['stored_states']:,.0f} end markers kept; "
            "log retention 1,000 records",
        ),
    ]
    table = "\n".join(
        ["| measure | figure | target | how |", "|---|---|---|---|"]
        + [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    )
    stamp = f"Measured {datetime.date.today().isoformat()} on {machine()}."
    print(stamp)
    print(table)
    if not args.quick:
        _write(BEGIN, END, f"{stamp}\n\n{table}")
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if servers:
        n_kafka = 100 if args.quick else 5_000
        k = asyncio.run(run_kafka(servers, n_kafka))
        ktable = "\n".join(
            [
                "| measure | figure | how |",
                "|---|---|---|",
                f"| completed processes/s on Kafka | {k['processes_per_s']:,.0f} "
                f"| {n_kafka:,} rebase processes published in batches of 200; "
                "6 partitions; 1 processor, 2 workers |",
                f"| processor transactions | {k['processor_transactions']:,.0f} | one per batch |",
            ]
        )
        version = os.environ.get("KAFKA_VERSION", "3.9.1")
        kstamp = f"{stamp[:-1]}, single-node Kafka {version} (scripts/kafka-local)."
        print(ktable)
        if not args.quick:
            _write(KBEGIN, KEND, f"{kstamp}\n\n{ktable}")
    return 0


def _write(begin: str, end: str, body: str) -> None:
    text = DOC.read_text()
    block = f"{begin}\n{body}\n{end}"
    DOC.write_text(re.sub(re.escape(begin) + ".*?" + re.escape(end), block, text, flags=re.S))
    print(f"written to {DOC}")


if __name__ == "__main__":
    sys.exit(main())
