"""What the pipeline benchmark measures and how it reports it: bursts, results, percentiles and
the tables (`bench.pipeline`)."""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.harness import format_table

# Between the marks: publish; the double's chat request received, answered; its embeddings
# request received, answered; `completed_at` (taken in the transaction after its reads); seen.
STAGES = (
    "publish -> chat request",
    "chat (LLM double)",
    "chat -> embeddings request",
    "embeddings (LLM double)",
    "embeddings -> in transaction",
    "in transaction -> completed seen",
)


@dataclass
class Burst:
    count: int
    span_s: float  # first publish to last push or completion
    window_s: float  # first publish to everything done (events published): the CPU's window
    cpu_s: dict[str, float]
    latencies_ms: list[float]
    lock_timeouts: int
    llm_calls: int

    @property
    def rate(self) -> float:
        return self.count / self.span_s


@dataclass
class Results:
    floor_ms: list[float] = field(default_factory=list)
    acked_ms: list[float] = field(default_factory=list)  # floor: publish -> publish acked
    e2e_ms: list[float] = field(default_factory=list)
    llm_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    round_ratios: list[float] = field(default_factory=list)
    floor_bursts: list[Burst] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    deliveries: Counter[str] = field(default_factory=Counter)

    @property
    def overhead_ms(self) -> list[float]:
        return [e - llm for e, llm in zip(self.e2e_ms, self.llm_ms, strict=True)]


def p50(values: Iterable[float]) -> float:
    return statistics.median(values)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else 0


def burst_stats(bursts: list[Burst]) -> dict[str, Any]:
    count, window = sum(b.count for b in bursts), sum(b.window_s for b in bursts)
    cpu = {name: sum(b.cpu_s[name] for b in bursts) for name in bursts[0].cpu_s}
    latencies = [ms for b in bursts for ms in b.latencies_ms]
    return {
        "per_s": p50(b.rate for b in bursts),
        "round_per_s": [round(b.rate, 2) for b in bursts],
        "latency_p50_ms": round(p50(latencies), 1),
        "latency_p99_ms": round(p99(latencies), 1),
        "cpu_ms_per_message": {name: round(s / count * 1e3, 1) for name, s in cpu.items()},
        "gateway_cpu_percent_of_one_core": round(cpu["gateway"] / window * 100, 1),
        "machine_busy_percent": round(cpu["machine"] / window / (os.cpu_count() or 1) * 100, 1),
        "firestore_lock_timeouts": sum(b.lock_timeouts for b in bursts),
        "llm_calls_per_conversation": sum(b.llm_calls for b in bursts) / count,
    }


PARTIES = ("gateway", "pubsub", "firestore", "bench")  # whose CPU a burst reports, and "machine"
BURST_COLUMNS = {  # header: cell, formatted from `burst_stats`
    "per s": "{per_s:.1f}",
    "p50 ms": "{latency_p50_ms:.0f}",
    "p99 ms": "{latency_p99_ms:.0f}",
    **{f"{p} CPU ms/msg": f"{{cpu_ms_per_message[{p}]:.0f}}" for p in PARTIES},
    "gateway %": "{gateway_cpu_percent_of_one_core:.0f}",
    "machine %": "{machine_busy_percent:.0f}",
    "lock timeouts": "{firestore_lock_timeouts}",
}


def tables(r: Results, burst: int) -> str:
    floor = p50(r.floor_ms)
    latency: list[tuple[str, ...]] = [("one at a time", "n", "p50 ms", "p99 ms", "p50 x floor")]
    for name, values in (
        ("floor: publish -> pushed", r.floor_ms),
        ("  of which publish -> acked", r.acked_ms),
        ("publish -> completed", r.e2e_ms),
        ("  LLM (double's own time)", r.llm_ms),
        ("  overhead (completed - LLM)", r.overhead_ms),
    ):
        ratio = "-" if name.startswith(("floor", "  of")) else f"{p50(values) / floor:.1f}"
        latency.append((name, str(len(values)), f"{p50(values):.1f}", f"{p99(values):.1f}", ratio))
    stages = [("stages (one at a time)", "p50 ms", "p99 ms")]
    stages += [(name, f"{p50(v):.1f}", f"{p99(v):.1f}") for name, v in r.stages_ms.items()]
    bursts = [(f"bursts of {burst}", *BURST_COLUMNS)]
    for name, group in (("floor: pushed", r.floor_bursts), ("completed", r.bursts)):
        stats = burst_stats(group)
        bursts.append((name, *(cell.format(**stats) for cell in BURST_COLUMNS.values())))
    return "\n\n".join(format_table(t, {0}) for t in (latency, stages, bursts))
