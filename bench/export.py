"""The account export against the emulator's own read rate: `python -m bench.export`.

For each account size (`--sizes`, memories; default 1,000 and 10,000) a fresh user gets that many
memories, stored as `shared.resources.memories.stored_memory` stores them (keywords and a
`--dims`-long embedding vector, 1536 as in production), and `--conversations` conversations (50)
with a transcript of a few segments, shaped as `tests/support/seed.py` makes them; all written
straight into the Firestore emulator in batches of at most 500.

Then, per size, the `users` function is started as its own process, as deployed
(`functions-framework --source main.py --target users`), fresh for each size, and each round
(`--rounds`, 3) alternates:

- read: this process streams the same documents as the export, the same way (the profile, each
  subcollection of `users/{uid}` as a recursive query paged with `limit(300).start_after(last)`,
  then the top-level collections' documents of the user), counting snapshots, with no copy and
  no JSON: the emulator's read rate through the Firestore client, which no export can beat;
- export: `GET /v1/users/me/export`, its body streamed with httpx; the wall time runs from the
  request to the last byte, and the archive is parsed afterwards to count its documents.

Rates are documents per second; the table gives each one's median and their ratio (the target:
export >= 0.5x read). The function's memory is its gunicorn worker's (the process that serves
requests): VmRSS from /proc once it has answered `GET /v1/users/me` and before the first export,
and VmHWM (peak RSS) after the last; the target is a peak that does not grow with the account
(the sizes' peaks less than 20 MB apart). The exit code is 0 whatever the verdict; non-zero only
if the stack or the function fails or an archive is not what was seeded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from glob import glob
from pathlib import Path
from typing import Any

import httpx

from bench.cold_start import functions_framework_bin
from bench.harness import BenchError, format_table, note, on_stack, positive_ints, write_results
from infra.auth_emulator import AuthEmulator, User
from infra.deployables import ROOT
from infra.emulators import PROJECT
from infra.local import LocalStack
from infra.ports import free_port
from infra.services import Service
from shared.providers.llm import EMBEDDING_DIMENSIONS
from shared.resources.export import PAGE_SIZE
from shared.resources.memories import MemoryCategory, stored_memory
from shared.resources.users import USER_OWNED_COLLECTIONS
from tests.support.seed import conversation_fields

BATCH = 500  # Firestore's most writes in one batch
BATCH_BYTES = 3_000_000  # and the emulator takes gRPC messages of at most 4 MiB
SEGMENTS = 6  # transcript segments per conversation
START_TIMEOUT = 60.0  # seconds from Popen to the first answer of the function
READ_TIMEOUT = 120.0  # seconds without a byte of the archive
PEAK_GROWTH_MB = 20.0  # target: the peaks of the sizes less than this apart
RATE_RATIO = 0.5  # target: export >= this x read
WORDS = ("slides", "budget", "dentist", "marathon", "Lisbon", "sister", "piano", "invoice")


@dataclass
class Size:
    memories: int
    user: User
    documents: int = 0  # in the archive
    archive_mb: float = 0.0
    read_rates: list[float] = field(default_factory=list)
    export_rates: list[float] = field(default_factory=list)
    rss_before_mb: float = 0.0
    peak_mb: float = 0.0

    @property
    def read(self) -> float:
        return statistics.median(self.read_rates)

    @property
    def export(self) -> float:
        return statistics.median(self.export_rates)

    @property
    def ratio(self) -> float:
        return self.export / self.read


def memory(rng: random.Random, index: int, dims: int, now: datetime) -> dict[str, Any]:
    words = " ".join(rng.choice(WORDS) for _ in range(8))
    content = f"Memory {index}: the user mentioned {words} while planning the week."
    category = rng.choice([MemoryCategory.interesting, MemoryCategory.system])
    embedding = [rng.uniform(-0.1, 0.1) for _ in range(dims)] if dims else None
    made = now - timedelta(minutes=index)
    return stored_memory(content, category, uuid.uuid4().hex[:20], embedding, made)


def conversation(index: int, now: datetime) -> dict[str, Any]:
    created = now - timedelta(hours=index)
    segments = [
        {
            "id": uuid.uuid4().hex,
            "text": f"Segment {n} of conversation {index}: I will send Sarah the slides tomorrow.",
            "speaker": f"SPEAKER_0{n % 2}",
            "speaker_id": n % 2,
            "is_user": n % 2 == 0,
            "start": n * 2.5,
            "end": n * 2.5 + 2.4,
        }
        for n in range(SEGMENTS)
    ]
    return conversation_fields(
        created_at=created,
        transcript_segments=segments,
        structured={"title": f"Slides {index}", "overview": "Planning.", "emoji": "📊"},
    )


def seed(db: Any, uid: str, memories: int, conversations: int, dims: int) -> None:
    """The account's documents, in batched writes of at most `BATCH` (fewer with embeddings,
    for the emulator's message limit)."""
    rng, now = random.Random(memories), datetime.now(UTC)
    per_batch = max(1, min(BATCH, BATCH_BYTES // (dims * 11 + 2000)))
    home = db.collection("users").document(uid)
    jobs = [("conversations", i) for i in range(conversations)]
    jobs += [("memories", i) for i in range(memories)]
    for start in range(0, len(jobs), per_batch):
        batch = db.batch()
        for name, i in jobs[start : start + per_batch]:
            document = memory(rng, i, dims, now) if name == "memories" else conversation(i, now)
            batch.set(home.collection(name).document(), document)
        batch.commit()


def read_all(db: Any, uid: str) -> int:
    """The documents the export reads, read as it reads them (without its copy and JSON)."""
    from google.cloud.firestore import FieldFilter

    home = db.collection("users").document(uid)
    home.get()
    count = 0
    for collection in sorted(home.collections(), key=lambda c: c.id):
        count += paged_count(collection.recursive())
    for name in USER_OWNED_COLLECTIONS:
        count += paged_count(db.collection(name).where(filter=FieldFilter("uid", "==", uid)))
    return count


def paged_count(ordered: Any) -> int:
    last, count = None, 0
    while True:
        page = ordered.start_after(last) if last is not None else ordered
        snapshots = list(page.limit(PAGE_SIZE).stream())
        count += len(snapshots)
        if len(snapshots) < PAGE_SIZE:
            return count
        last = snapshots[-1]


def status_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of `pid` from /proc, in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            lines = [line.split() for line in status if line.startswith(("VmRSS:", "VmHWM:"))]
    except OSError as error:
        raise BenchError(f"process {pid} is gone: {error}") from None
    return {line[0].rstrip(":"): int(line[1]) * 1024 / 1e6 for line in lines}


def children(pid: int) -> list[int]:
    found = []
    for path in glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(path.split("/")[2]))
    return found


class Function:
    """The `users` function served by functions-framework on a free port."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [functions_framework_bin(), "--source", "main.py", "--target", "users"]
        command += ["--port", str(self.port), "--host", "127.0.0.1"]
        self.service = Service(name, command, self.port, cwd=ROOT, env=env)
        self.log_dir = log_dir

    def start(self, client: httpx.Client, user: User) -> int:
        """Start it and wait for `GET /v1/users/me` to answer 200 (which makes the profile);
        the pid of the process that serves (gunicorn's worker, or the process itself)."""
        self.service.start(self.log_dir)
        process = self.service.process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                reply = client.get(f"{self.url}/v1/users/me", headers=user.bearer, timeout=10)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                if process.poll() is not None:
                    raise BenchError(f"users exited ({process.returncode})\n{self.log()}") from None
                time.sleep(0.05)
                continue
            if reply.status_code != 200:
                raise BenchError(f"GET /v1/users/me: {reply.status_code} {reply.text[:500]}")
            workers = children(process.pid)
            return workers[0] if len(workers) == 1 else process.pid
        raise BenchError(f"users: no answer within {START_TIMEOUT:.0f} s\n{self.log()}")

    def log(self) -> str:
        return self.service.log_tail()

    def stop(self) -> None:
        self.service.stop()


def export(client: httpx.Client, url: str, size: Size) -> tuple[float, dict[str, Any]]:
    """Seconds from the request to the archive's last byte, and the archive."""
    chunks = []
    timeout = httpx.Timeout(READ_TIMEOUT, connect=5)
    began = time.perf_counter()
    path = f"{url}/v1/users/me/export"
    with client.stream("GET", path, headers=size.user.bearer, timeout=timeout) as reply:
        if reply.status_code != 200:
            raise BenchError(f"export: {reply.status_code} {reply.read()[:500]!r}")
        for chunk in reply.iter_raw():
            chunks.append(chunk)
    elapsed = time.perf_counter() - began
    body = b"".join(chunks)
    size.archive_mb = len(body) / 1e6
    try:
        return elapsed, json.loads(body)
    except ValueError as error:
        raise BenchError(f"export: not JSON ({error}); ends {body[-200:]!r}") from None


def measure(args: argparse.Namespace, db: Any, size: Size, env: dict[str, str], logs: Path) -> None:
    function = Function(env, logs, f"users-{size.memories}")
    with httpx.Client() as client:
        try:
            pid = function.start(client, size.user)
            size.rss_before_mb = status_mb(pid)["VmRSS"]
            for index in range(args.rounds):
                began = time.perf_counter()
                read = read_all(db, size.user.uid)
                size.read_rates.append(read / (time.perf_counter() - began))
                elapsed, archive = export(client, function.url, size)
                seeded = {"memories": size.memories, "conversations": args.conversations}
                found = {name: len(archive["collections"].get(name, [])) for name in seeded}
                if found != seeded:
                    raise BenchError(f"the archive holds {found}, seeded {seeded}")
                lists = [*archive["collections"].values(), *archive["records"].values()]
                size.documents = sum(len(documents) for documents in lists)
                del archive, lists
                size.export_rates.append(size.documents / elapsed)
                note(
                    f"  {size.memories} memories, round {index + 1}/{args.rounds}: read {read} "
                    f"docs at {size.read_rates[-1]:.0f}/s, export {size.documents} docs "
                    f"({size.archive_mb:.1f} MB) in {elapsed:.2f} s, {size.export_rates[-1]:.0f}/s"
                )
            size.peak_mb = status_mb(pid)["VmHWM"]
        except httpx.HTTPError as error:
            raise BenchError(f"export: {error!r}\n{function.log()}") from None
        finally:
            function.stop()


def run(args: argparse.Namespace, stack: LocalStack, logs: Path) -> list[Size]:
    from google.cloud import firestore

    os.environ.update(stack.client_env())  # this process's client reaches the emulator
    env = {**os.environ, **stack.client_env(), "ENVIRONMENT": "development"}
    auth = AuthEmulator(stack.client_env()["FIREBASE_AUTH_EMULATOR_HOST"], PROJECT)
    db = firestore.Client(project=PROJECT)
    sizes = [Size(n, auth.sign_up()) for n in args.sizes]
    for size in sizes:
        began = time.monotonic()
        seed(db, size.user.uid, size.memories, args.conversations, args.dims)
        note(f"  seeded {size.memories} memories in {time.monotonic() - began:.1f} s")
    for size in sizes:
        measure(args, db, size, env, logs)
    return sizes


def verdict(sizes: list[Size]) -> tuple[bool, bool, str]:
    growth = max(s.peak_mb for s in sizes) - min(s.peak_mb for s in sizes)
    memory_ok = growth < PEAK_GROWTH_MB
    worst = min(sizes, key=lambda s: s.ratio)
    rate_ok = worst.ratio >= RATE_RATIO
    peaks = ", ".join(f"{s.peak_mb:.1f}" for s in sizes)
    text = (
        f"memory {'PASS' if memory_ok else 'FAIL'}: peak RSS {peaks} MB, {growth:.1f} MB apart "
        f"(target < {PEAK_GROWTH_MB:.0f}); rate {'PASS' if rate_ok else 'FAIL'}: export/read "
        f"{', '.join(f'{s.ratio:.2f}' for s in sizes)} (lowest {worst.ratio:.2f}x at "
        f"{worst.memories} memories, target >= {RATE_RATIO}x)"
    )
    return memory_ok, rate_ok, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", type=positive_ints, default=[1000, 10000], help="memories (1000,10000)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="read/export rounds (default 3)")
    parser.add_argument("--conversations", type=int, default=50, help="per account (50)")
    parser.add_argument(
        "--dims", type=int, default=EMBEDDING_DIMENSIONS, help="embedding size (1536; 0: none)"
    )
    parser.add_argument("--results", type=Path, help="JSON file (bench/results/export.json)")
    args = parser.parse_args()
    if args.rounds < 1 or args.conversations < 0 or args.dims < 0:
        parser.error("--rounds must be >= 1, --conversations and --dims >= 0")

    began, started_at = time.monotonic(), datetime.now(UTC)
    note(
        f"export: accounts of {', '.join(map(str, args.sizes))} memories ({args.dims}-d "
        f"embeddings) and {args.conversations} conversations; {args.rounds} rounds of read "
        f"(this process) then GET /v1/users/me/export (a fresh users function per size)"
    )
    sizes = on_stack(lambda stack, workdir: run(args, stack, workdir))
    wall = time.monotonic() - began

    header = ["memories", "documents", "archive MB", "read docs/s", "export docs/s"]
    header += ["export/read", "RSS before MB", "peak RSS MB"]
    rows = [
        (
            str(s.memories),
            str(s.documents),
            f"{s.archive_mb:.1f}",
            f"{s.read:.0f}",
            f"{s.export:.0f}",
            f"{s.ratio:.2f}",
            f"{s.rss_before_mb:.1f}",
            f"{s.peak_mb:.1f}",
        )
        for s in sizes
    ]
    print(f"medians of {args.rounds} rounds\n" + format_table([header, *rows], left=set()))
    memory_ok, rate_ok, text = verdict(sizes)
    summary = f"{text}; wall {wall:.0f} s"
    print(summary, flush=True)
    write_results(
        "export",
        started_at,
        wall,
        summary,
        to=args.results,
        rounds=args.rounds,
        conversations=args.conversations,
        embedding_dims=args.dims,
        page_size=PAGE_SIZE,
        targets={"peak_growth_mb_below": PEAK_GROWTH_MB, "export_read_ratio_at_least": RATE_RATIO},
        memory_pass=memory_ok,
        rate_pass=rate_ok,
        sizes=[
            {
                "memories": s.memories,
                "documents": s.documents,
                "archive_mb": round(s.archive_mb, 2),
                "read_docs_per_s": [round(r, 1) for r in s.read_rates],
                "export_docs_per_s": [round(r, 1) for r in s.export_rates],
                "read_median": round(s.read, 1),
                "export_median": round(s.export, 1),
                "ratio": round(s.ratio, 3),
                "rss_before_mb": round(s.rss_before_mb, 1),
                "peak_rss_mb": round(s.peak_mb, 1),
            }
            for s in sizes
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
