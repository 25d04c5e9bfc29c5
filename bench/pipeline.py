"""Post-processing through the real local stack: `python -m bench.pipeline`.

A conversation is seeded `processing` in the Firestore emulator for a fresh user, and
`conversation.finished` is published as `shared.conversations` publishes it (`shared.pubsub`'s
publisher, batching included). The Pub/Sub emulator pushes it to the gateway (every function
behind one uvicorn, as in `make run`; `scheduled=False`), whose `process_conversation` calls the
OpenAI double (a thread here, answering a valid extraction with 2 memories and 1 action item at
once) and commits. Completed = a Firestore listener here on that conversation (`on_snapshot`,
one per document, started before publishing) seeing it: a listener costs the emulator nothing
while waiting, where 5 ms polling would add ~200 reads/s to the 2 cores under test; in
development, polling gave the same p50.

Floor: the same message published the same way to a bench topic whose push subscription (the
policy of `infra/resources.yaml`) targets a stdlib HTTP server here that stamps arrival and
answers 204: the emulator's publish->push, which no post-processing can beat locally.

Each round, alternating: K floor messages one at a time, K conversations one at a time, then a
burst of N floor messages and one of N conversations, each published at once (rate: N / first
publish to last push or completion; CPU of the gateway, the emulators and this process until
all is done; Firestore emulator "Transaction lock timeout"s, from its log). LLM time: the
double's own time (request received to response written) for a conversation's calls; overhead =
publish->completed minus it; the stages come from the double's and the transaction's clocks.
The headline ratio is the median over rounds of per-round p50 ratios. Checks: every conversation
completed by exactly one delivery (gateway log), with an answered chat and embeddings call, and
2 memories and 1 action item stored. The exit code is 0 whatever the numbers; non-zero only if
something fails, times out or a check does not hold, with the gateway's log.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import BenchError, note, on_stack, write_results
from bench.pipeline_floor import FLOOR_TOPIC, Arrivals, Sink, create_floor_topic
from bench.pipeline_model import MARKER, respond
from bench.pipeline_report import (
    STAGES,
    Burst,
    Results,
    burst_stats,
    p50,
    p99,
    tables,
)
from infra.emulators import PROJECT
from infra.local import LocalStack
from infra.services import Service
from shared.store import pubsub
from shared.store.topics import ConversationFinished
from tests.support import seed
from tests.support.openai_double import OpenAIDouble, RecordedRequest

CHAT, EMBEDDINGS = "/v1/chat/completions", "/v1/embeddings"
WARMUP = 5  # unrecorded floor messages and conversations, one at a time
WAIT_TIMEOUT = 30.0  # seconds: one conversation or push
BURST_TIMEOUT = 180.0  # seconds: a whole burst
LOCK_TIMEOUT = "Transaction lock timeout"  # the Firestore emulator's log line
# The Pub/Sub emulator pushes on a 100 ms tick: a message waits for the next one. Publishing
# right after the previous push would always wait a whole tick, so each message published one
# at a time is first delayed by a random part of a tick (not timed).
PUSH_TICK = 0.1


class Bench:
    def __init__(self, stack: LocalStack, double: OpenAIDouble) -> None:
        from google.cloud import firestore
        from google.cloud.firestore import FieldFilter

        self.stack, self.double, self.results = stack, double, Results()
        self.run_id, self.count, self.read_requests = uuid.uuid4().hex[:8], 0, 0
        self.phase = random.Random(0)
        # By uid: published, publish acked, `completed_at` (on this process's clock).
        self.sent: dict[str, float] = {}
        self.acked: dict[str, float] = {}
        self.in_transaction: dict[str, float] = {}
        self.cids: dict[str, str] = {}  # uid -> conversation id
        self.calls: dict[str, list[RecordedRequest]] = {}  # uid -> its requests to the double
        self.gateway, self.firestore = (self.service(n) for n in ("gateway", "firestore"))
        self.sink = Sink()
        create_floor_topic(f"http://127.0.0.1:{self.sink.server_address[1]}/")
        self.completed = Arrivals("conversations completed")
        self.published = Arrivals("conversations with their events published")
        self.db = firestore.Client(project=PROJECT)
        run = FieldFilter("bench_run", "==", self.run_id)
        self.all = self.db.collection_group("conversations").where(filter=run)
        self.listening = Arrivals("listeners started")
        self.watches: dict[str, Any] = {}

    def service(self, name: str) -> Service:
        return next(s for s in self.stack.services if s.name == name)

    def pid(self, name: str) -> int:
        process = self.service(name).process
        assert process is not None
        return process.pid

    def listen(self, uids: list[str]) -> None:
        """A listener on each conversation, started before it is published. One per document:
        on every change the emulator resends all of a query's matches (a RESET), so one query
        for the whole run would cost this process O(run size) per change."""
        for uid in uids:
            path = f"users/{uid}/conversations/{self.cids[uid]}"
            self.watches[uid] = self.db.document(path).on_snapshot(self.on_snapshot)
        self.listening.wait(uids, WAIT_TIMEOUT, self.gateway)

    def on_snapshot(self, docs: list[Any], _changes: Any, _read_time: Any) -> None:
        now, wall = time.monotonic(), time.time()
        for snapshot in docs:
            uid, fields = snapshot.reference.parent.parent.id, snapshot.to_dict() or {}
            self.listening.stamp(uid, now)
            if fields.get("status") != "completed":
                continue
            # The function's clock in the transaction, on this process's monotonic clock.
            self.in_transaction.setdefault(uid, fields["completed_at"].timestamp() - wall + now)
            self.completed.stamp(uid, now)
            if fields.get("events_published"):
                self.published.stamp(uid, now)

    def stop_listening(self) -> None:
        for watch in self.watches.values():
            watch.unsubscribe()
        self.watches.clear()

    def close(self) -> None:
        self.stop_listening()
        self.sink.shutdown()
        self.sink.server_close()

    def new_uids(self, count: int, prefix: str) -> list[str]:
        self.count += count
        return [f"{prefix}-{self.run_id}-{n}" for n in range(self.count - count, self.count)]

    def seed(self, uids: list[str]) -> None:
        for uid in uids:
            segment = {
                "id": uuid.uuid4().hex,
                "speaker": "SPEAKER_00",
                "speaker_id": 0,
                "is_user": True,
                "start": 0.0,
                "end": 2.5,
                "text": f"I will send Sarah the {uid} slides tomorrow at five.",
            }
            self.cids[uid] = seed.conversation(
                self.db,
                uid,
                status="processing",
                processing_since=datetime.now(UTC),
                transcript_segments=[segment],
                structured={},
                bench_run=self.run_id,
            )

    def deliver(self, uids: list[str], floor: bool, timeout: float) -> None:
        """Publish for `uids` at once, as the service publishes; wait for the pushes, or for the
        conversations completed and their events out (a tail is not the next one's time)."""
        publisher = pubsub.publisher()
        path = pubsub.topic_path(FLOOR_TOPIC if floor else ConversationFinished.topic)
        futures = []
        for uid in uids:
            data = {"uid": uid, "conversation_id": self.cids.get(uid, uid), "reason": "bench"}
            self.sent[uid] = time.monotonic()
            body = json.dumps(data, separators=(",", ":")).encode()
            futures.append(publisher.publish(path, body, **data))
        for uid, future in zip(uids, futures, strict=True):
            future.result(timeout=WAIT_TIMEOUT)
            self.acked[uid] = time.monotonic()
        if floor:
            return self.sink.arrivals.wait(uids, timeout, self.gateway)
        self.completed.wait(uids, timeout, self.gateway)
        self.published.wait(uids, timeout, self.gateway)
        requests = self.double.requests[self.read_requests :]
        self.read_requests += len(requests)
        for request in requests:
            if (found := MARKER.search(json.dumps(request.body))) is not None:
                self.calls.setdefault(found.group(), []).append(request)
        for uid in uids:
            if {r.path for r in self.calls.get(uid, []) if r.status == 200} != {CHAT, EMBEDDINGS}:
                raise BenchError(f"{uid}: completed without an answered chat and embeddings call")

    def one_at_a_time(self, count: int, floor: bool) -> list[float]:
        uids = self.new_uids(count, "floor" if floor else "bench")
        for uid in uids:
            if not floor:
                self.seed([uid])
                self.listen([uid])
            time.sleep(self.phase.uniform(0, PUSH_TICK))  # see PUSH_TICK
            self.deliver([uid], floor, WAIT_TIMEOUT)
            self.stop_listening()
        r = self.results
        if floor:
            r.acked_ms += [(self.acked[uid] - self.sent[uid]) * 1e3 for uid in uids]
            return self.latencies(self.sink.arrivals, uids)
        for uid in uids:
            calls = self.calls[uid]
            r.llm_ms.append(sum((c.ended_at or c.received_at) - c.received_at for c in calls) * 1e3)
            if [c.path for c in calls] == [CHAT, EMBEDDINGS]:  # a single delivery: its stages
                chat, embed = calls
                assert chat.ended_at is not None and embed.ended_at is not None
                marks = [
                    self.sent[uid],
                    chat.received_at,
                    chat.ended_at,
                    embed.received_at,
                    embed.ended_at,
                    self.in_transaction[uid],
                    self.completed.at[uid],
                ]
                for name, start, end in zip(STAGES, marks, marks[1:], strict=False):
                    r.stages_ms[name].append((end - start) * 1e3)
        e2e = self.latencies(self.completed, uids)
        r.e2e_ms += e2e
        return e2e

    def latencies(self, arrivals: Arrivals, uids: list[str]) -> list[float]:
        return [(arrivals.at[uid] - self.sent[uid]) * 1e3 for uid in uids]

    def lock_timeouts(self) -> int:
        assert self.firestore.log_path is not None
        return self.firestore.log_path.read_text(errors="replace").count(LOCK_TIMEOUT)

    def burst(self, count: int, floor: bool) -> Burst:
        """`count` published at once: the span from the first publish to the last push or
        completion, and what each party spent in CPU until everything was done."""
        uids = self.new_uids(count, "floor" if floor else "bench")
        if not floor:
            self.seed(uids)
            self.listen(uids)
        gateway, pubsub_pgid, firestore_pgid = (
            self.pid(n) for n in ("gateway", "pubsub", "firestore")
        )
        parties: dict[str, Callable[[], float]] = {
            "gateway": lambda: harness.cpu_seconds(f"/proc/{gateway}/stat"),
            "pubsub": lambda: harness.group_cpu_seconds(pubsub_pgid),
            "firestore": lambda: harness.group_cpu_seconds(firestore_pgid),
            "bench": lambda: harness.cpu_seconds("/proc/self/stat"),
            "machine": harness.machine_busy_seconds,
        }
        before, locks = {name: read() for name, read in parties.items()}, self.lock_timeouts()
        began = time.monotonic()
        self.deliver(uids, floor, BURST_TIMEOUT)
        window = time.monotonic() - began
        cpu = {name: read() - before[name] for name, read in parties.items()}
        arrivals = self.sink.arrivals if floor else self.completed
        span = max(arrivals.at[u] for u in uids) - min(self.sent[u] for u in uids)
        calls = sum(len(self.calls.get(uid, [])) for uid in uids)
        self.stop_listening()
        locks = self.lock_timeouts() - locks
        return Burst(count, span, window, cpu, self.latencies(arrivals, uids), locks, calls)

    def verify(self) -> None:
        """Every conversation completed by one delivery, with 2 memories and 1 action item."""
        statuses = Counter(str(s.get("status")) for s in self.all.select(["status"]).stream())
        if set(statuses) != {"completed"} or statuses["completed"] != len(self.cids):
            raise BenchError(f"conversations by status {dict(statuses)}, {len(self.cids)} seeded")
        for name, expected in (("memories", 2), ("action_items", 1)):
            stored = Counter(
                str(doc.get("conversation_id"))
                for doc in self.db.collection_group(name).select(["conversation_id"]).stream()
            )
            if wrong := [c for c in self.cids.values() if stored[c] != expected]:
                raise BenchError(f"{len(wrong)} conversations without {expected} {name}")
        assert self.gateway.log_path is not None
        outcomes: Counter[tuple[str, str]] = Counter()
        for line in self.gateway.log_path.read_text(errors="replace").splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if (message := str(entry.get("message", ""))).startswith("post-processing "):
                outcome = "raised" if ";" in message else message.split()[-1]  # else: the result
                outcomes[outcome, entry.get("conversation_id", "")] += 1
        if wrong := [c for c in self.cids.values() if outcomes["completed", c] != 1]:
            raise BenchError(f"{len(wrong)} conversations not completed by exactly one delivery")
        self.results.deliveries = Counter(status for status, _ in outcomes.elements())


def run(args: argparse.Namespace, stack: LocalStack, double: OpenAIDouble) -> Results:
    os.environ.update({**stack.client_env(), "ENVIRONMENT": "development"})  # for this process
    bench = Bench(stack, double)
    try:
        bench.one_at_a_time(WARMUP, floor=True)
        bench.one_at_a_time(WARMUP, floor=False)
        results = bench.results = Results()  # the warm-up's are dropped
        note(f"  warmed up ({WARMUP} floor messages and conversations, not recorded)")
        for index in range(args.rounds):
            floor = bench.one_at_a_time(args.samples, floor=True)
            results.floor_ms += floor
            e2e = bench.one_at_a_time(args.samples, floor=False)
            results.round_ratios.append(p50(e2e) / p50(floor))
            results.floor_bursts.append(bench.burst(args.burst, floor=True))
            results.bursts.append(bench.burst(args.burst, floor=False))
            note(
                f"  round {index + 1}/{args.rounds}: publish->completed p50 {p50(e2e):.1f} ms, "
                f"floor {p50(floor):.1f} ms ({results.round_ratios[-1]:.1f}x); burst of "
                f"{args.burst}: {results.bursts[-1].rate:.1f} conversations/s "
                f"({results.bursts[-1].lock_timeouts} lock timeouts), floor "
                f"{results.floor_bursts[-1].rate:.0f} pushes/s"
            )
        bench.verify()
    finally:
        bench.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=20, help="one at a time, per round (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--burst", type=int, default=30, help="published at once (default 30)")
    parser.add_argument("--results", type=Path, help="JSON file (bench/results/pipeline.json)")
    args = parser.parse_args()
    if min(args.samples, args.rounds, args.burst) < 2:
        parser.error("--samples, --rounds and --burst must be >= 2")

    began, started_at = time.monotonic(), datetime.now(UTC)
    note(
        f"pipeline: conversation.finished -> Pub/Sub emulator push -> process_conversation -> "
        f"completed, LLM double answering at once; {args.rounds} rounds of {args.samples} one "
        f"at a time and a burst of {args.burst}, alternating with the emulator's push floor"
    )
    double = OpenAIDouble()
    double.responder = respond
    with double:
        gateway_env = {
            "OPENAI_API_KEY": double.api_key,
            "OPENAI_BASE_URL": double.url,
            "PYTHONUNBUFFERED": "1",  # its log, read at the end, counts the deliveries
        }
        results = on_stack(
            lambda stack, _: run(args, stack, double), gateway_env=gateway_env, scheduled=False
        )
    wall = time.monotonic() - began

    print(tables(results, args.burst))
    pipeline, floor = burst_stats(results.bursts), burst_stats(results.floor_bursts)
    ratio, e2e = p50(results.round_ratios), results.e2e_ms
    gateway_ms = pipeline["cpu_ms_per_message"]["gateway"]
    summary = (
        f"{pipeline['per_s']:.1f} conversations/s in bursts of {args.burst} "
        f"({pipeline['firestore_lock_timeouts']} Firestore emulator lock timeouts; the gateway's "
        f"CPU alone, {gateway_ms:.0f} ms each, would allow {1000 / gateway_ms:.1f}/s per core; "
        f"floor {floor['per_s']:.0f} pushes/s). One at a time: publish->completed p50 "
        f"{p50(e2e):.1f} ms, p99 {p99(e2e):.1f} ms, {ratio:.1f}x the floor's p50 "
        f"{p50(results.floor_ms):.1f} ms; LLM p50 {p50(results.llm_ms):.1f} ms, overhead p50 "
        f"{p50(results.overhead_ms):.1f} ms. Deliveries {dict(results.deliveries)}; wall "
        f"{wall:.0f} s"
    )
    print(summary, flush=True)

    def stats(values: list[float]) -> dict[str, float]:
        return {"n": len(values), "p50_ms": round(p50(values), 2), "p99_ms": round(p99(values), 2)}

    write_results(
        "pipeline",
        started_at,
        wall,
        summary,
        to=args.results,
        rounds=args.rounds,
        samples_per_round=args.samples,
        burst=args.burst,
        warmup=WARMUP,
        one_at_a_time={
            "floor_publish_to_pushed": stats(results.floor_ms),
            "floor_publish_to_acked": stats(results.acked_ms),
            "publish_to_completed": stats(e2e),
            "llm": stats(results.llm_ms),
            "overhead": stats(results.overhead_ms),
            "p50_ratio_to_floor": round(ratio, 3),
            "round_p50_ratios": [round(x, 3) for x in results.round_ratios],
            "stages": {name: stats(v) for name, v in results.stages_ms.items()},
        },
        bursts={"floor": floor, "conversations": pipeline},
        deliveries=dict(results.deliveries),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
