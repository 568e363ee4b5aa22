"""Benchmarks: scripts that measure and print figures (never timed unit tests).

Each module has ``add_arguments(parser)``, ``run(args) -> dict`` and ``summary(result) -> str`` (see
``commands/bench.py``); the ones that start helper processes of themselves also run standalone
(``python -m dream_vla_ros.benchmarks.<name>``) through :func:`standalone_main`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def standalone_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    summary: Callable[[dict[str, Any]], str],
) -> int:
    """Parse ``argv``, run the benchmark and print its summary, or one JSON object with ``--json`` or when it
    runs as a helper process (``--role``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps(result) if args.json or args.role else summary(result), flush=True)
    return 0


def last_json(text: str) -> dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object (a helper process's result), or ``{}``."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return {}
