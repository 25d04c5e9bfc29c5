"""What every benchmark's `main` shares: a local stack in a scratch directory, stopped whatever
happens (SIGTERM acts like Ctrl-C), failures turned into exit codes, and results written as JSON
with the machine's context beside them; and CPU time from /proc, for a benchmark that reports what
its load cost a server process, an emulator (a process group) or the whole machine."""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import tempfile
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from glob import glob
from pathlib import Path
from typing import Any, TypeVar

from infra.deployables import ROOT
from infra.local import LocalStack
from infra.ports import Ports

RESULTS_DIR = ROOT / "bench" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server failed or answered wrongly); the message says why."""


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def on_stack(
    work: Callable[[LocalStack, Path], T],
    gateway_env: dict[str, str] | None = None,
    scheduled: bool = True,
) -> T:
    """`work(stack, scratch_dir)` against a fresh local stack on free ports (`gateway_env` and
    `scheduled` as `LocalStack` takes them). Exits with 1 on a `BenchError` and 130 on Ctrl-C or
    SIGTERM, after stopping everything."""
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="mnemo-bench-") as scratch:
        workdir = Path(scratch)
        stack = LocalStack(
            Ports.free(), workdir / "stack", gateway_env=gateway_env, scheduled=scheduled
        )
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


def note(text: str) -> None:
    """A progress line on stderr, at once (stdout carries only the report)."""
    print(text, file=sys.stderr, flush=True)


def write_results(
    name: str,
    started_at: datetime,
    wall: float,
    summary: str,
    *,
    to: Path | None = None,
    **fields: Any,
) -> None:
    """`bench/results/<name>.json` (or the file `to`): the run's own `fields`, its summary and
    the machine."""
    path = to or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started_at.isoformat(timespec="seconds"),
        **fields,
        "wall_s": round(wall, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "summary": summary,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


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


def _stat_fields(path: str) -> list[str]:
    """The fields after the command name of a /proc `stat` file; [] if the process is gone."""
    try:
        with open(path) as stat:
            return stat.read().rpartition(")")[2].split()
    except OSError:
        return []


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0  # utime + stime


def cpu_seconds(stat_path: str) -> float:
    """User + system CPU seconds so far of a process (`/proc/<pid>/stat`) or a thread
    (`/proc/<pid>/task/<tid>/stat`); 0 if it is gone."""
    return _cpu(_stat_fields(stat_path))


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds so far of every live process of process group `pgid` (an emulator and its
    JVM, a server started in a session of its own)."""
    processes = (_stat_fields(path) for path in glob("/proc/[0-9]*/stat"))
    return sum(_cpu(fields) for fields in processes if fields and int(fields[2]) == pgid)


def machine_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far, summed over all cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]  # guest time is already in user
    return (sum(values) - values[3] - values[4]) / CLK_TCK  # all but idle and iowait


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MiB (`VmRSS`); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = [line.split()[1] for line in status if line.startswith("VmRSS:")]
    except OSError:
        return 0.0
    return int(rss[0]) / 1024 if rss else 0.0


def positive_ints(text: str) -> list[int]:
    """An argparse type: a comma-separated list of positive integers, sorted, once each."""
    import argparse

    values = sorted({int(part) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values
