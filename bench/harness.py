"""What every benchmark's `main` shares: a local stack in a scratch directory, stopped whatever
happens (SIGTERM acts like Ctrl-C), failures turned into exit codes, and results written as JSON
with the machine's context beside them; and CPU time from /proc, for a benchmark that reports what
its load cost a server process, an emulator (a process group) or the whole machine. With
`--against REF` a benchmark also runs an earlier commit's processes beside this tree's (`trees`,
`compare`)."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Tree:
    """A source tree whose processes a benchmark starts: this one ("HEAD") or a temporary
    worktree of the commit it is compared with ("REF")."""

    name: str
    path: Path
    commit: str

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` with this tree first on PYTHONPATH: the venv's editable install points at
        another checkout, and a process of this tree must import this tree's modules."""
        paths = [str(self.path), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _check_imports(tree: Tree) -> None:
    """A child started as the benchmark starts the tree's servers (cwd and PYTHONPATH; `-P`, so
    that the current directory alone cannot make it pass) must import `shared` from the tree."""
    done = subprocess.run(
        [sys.executable, "-P", "-c", "import shared; print(shared.__file__)"],
        cwd=tree.path,
        env=tree.env(os.environ),
        capture_output=True,
        text=True,
    )
    found = done.stdout.strip()
    if done.returncode or not Path(found).is_relative_to(tree.path):
        raise BenchError(f"{tree.name} imports shared from {found!r}: {done.stderr.strip()}")
    note(f"  {tree.name} = {tree.commit[:7]} at {tree.path}: shared from {found}")


@contextmanager
def trees(against: str | None) -> Iterator[list[Tree]]:
    """[this tree], or with `against` (a git ref) [a temporary worktree of it, this tree]; the
    worktree is removed afterwards."""
    head = Tree("HEAD", ROOT, _git("rev-parse", "HEAD"))
    if against is None:
        yield [head]
        return
    commit = _git("rev-parse", "--verify", f"{against}^{{commit}}")
    if _git("status", "--porcelain", "--untracked-files=no"):
        note("  this tree has uncommitted changes: HEAD below means the tree as it is")
    with tempfile.TemporaryDirectory(prefix="mnemo-bench-ref-") as scratch:
        path = Path(scratch) / "tree"
        _git("worktree", "add", "--quiet", "--detach", str(path), commit)
        try:
            sides = [Tree("REF", path, commit), head]
            for tree in sides:
                _check_imports(tree)
            yield sides
        finally:
            _git("worktree", "remove", "--force", str(path))


def alternated(sides: Sequence[Tree], index: int) -> Sequence[Tree]:
    """The order of round `index`: REF first in even rounds, HEAD first in odd ones, so that
    neither always runs on the other's warm caches."""
    return sides if index % 2 == 0 else sides[::-1]


def results_name(name: str, against: str | None) -> str:
    """`name`, or for a comparison `name_vs_<ref>` (its own file: one run against the earlier
    commit and one against HEAD are read together)."""
    return name if against is None else f"{name}_vs_{against.replace('/', '-')}"


def compare(rows: Sequence[tuple[str, float, float]], sides: Sequence[Tree], what: str) -> str:
    """An A/B table: per row (label, REF value, HEAD value) both values and HEAD/REF, under a
    line that says which commits they are and `what` the values are."""
    ref, head = sides
    table = [("", "REF", "HEAD", "HEAD/REF")]
    table += [(label, f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}" if a else "-") for label, a, b in rows]
    legend = f"REF = {ref.commit[:7]}, HEAD = this tree ({head.commit[:7]}): {what}"
    return f"{legend}\n{format_table(table, left={0})}"


def comparison_records(rows: Sequence[tuple[str, float, float]]) -> list[dict[str, Any]]:
    """The rows of `compare` for `write_results`."""
    return [
        {
            "row": label,
            "ref": round(a, 2),
            "head": round(b, 2),
            "ratio": round(b / a, 3) if a else None,
        }
        for label, a, b in rows
    ]
