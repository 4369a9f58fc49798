"""The ``procession`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="procession", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the rebase saga end to end, in memory by default")
    demo.add_argument("--bootstrap-servers", help="run on this Kafka cluster instead")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from procession._demo import main as demo_main  # noqa: PLC0415 - keeps --help fast

        return demo_main(args.bootstrap_servers)
    return 2


if __name__ == "__main__":
    sys.exit(main())
