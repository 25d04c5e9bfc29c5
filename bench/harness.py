"""What every benchmark's `main` shares: a local stack in a scratch directory, stopped whatever
happens (SIGTERM acts like Ctrl-C), failures turned into exit codes, and results written as JSON
with the machine's context beside them."""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from infra.local import LocalStack, Ports
from shared.deployables import ROOT

RESULTS_DIR = ROOT / "bench" / "results"

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server failed or answered wrongly); the message says why."""


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def on_stack(work: Callable[[LocalStack, Path], T]) -> T:
    """`work(stack, scratch_dir)` against a fresh local stack on free ports. Exits with 1 on a
    `BenchError` and 130 on Ctrl-C or SIGTERM, after stopping everything."""
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="mnemo-bench-") as scratch:
        workdir = Path(scratch)
        stack = LocalStack(Ports.free(), workdir / "stack")
        try:
            stack.start()
            return work(stack, workdir)
        except BenchError as error:
            print(f"bench failed: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            stack.stop()


def write_results(
    name: str, started_at: datetime, wall: float, summary: str, **fields: Any
) -> None:
    """`bench/results/<name>.json`: the run's own `fields`, its summary and the machine."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started_at.isoformat(timespec="seconds"),
        **fields,
        "wall_s": round(wall, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "summary": summary,
    }
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")


def format_table(rows: Sequence[Sequence[str]], left: Collection[int]) -> str:
    """`rows` (the first is the header) as aligned text: the `left` columns left-aligned, the
    others right-aligned, with a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
