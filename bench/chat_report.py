"""The chat benchmark's tables and its summary: per tree, then HEAD against REF (`bench.chat`)."""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from bench.chat_turns import SWITCH_INTERVAL, Sample, pct, stats
from bench.harness import format_table

FLOORS = ("firestore_history", "agent_stack_in_process", "ws_rtt", "http_rtt")

COLD = {
    "floor": "floor: functions-framework + Firestore read, first 200",
    "bare": "realtime --lifespan off: first 200 on /health",
    "health": "realtime: first 200 on /health",
    "open": "realtime: first chat's socket open, from /health",
    "first_ttfd": "realtime: first chat's TTFD, from its send",
    "from_start": "realtime: first chat's first delta, from process start",
}

LATENCY = ("TTFD p50", "added p50", "p99", "before model p50", "after 1st token p50")
LATENCY_KEYS = ("ttfd_p50", "added_p50", "added_p99", "before_model_p50", "after_first_token_p50")


def latency(samples: list[Sample]) -> tuple[str, ...]:
    found = stats(samples)
    cells = (f"{found[f'{key}_ms']:.1f}" for key in LATENCY_KEYS)
    return (*cells, f"{found['model_ttft_p50_ms']:.2f}")


def tables(out: dict[str, Any]) -> str:
    warm, c = out["warm"], out["cold"]
    rows: list[tuple[str, ...]] = [("", "samples", *LATENCY, "model TTFT p50")]
    rows += [(t.upper(), str(len(warm[t])), *latency(warm[t])) for t in ("ws", "sse")]
    lowest = ", ".join(f"{name} {ms:.2f}" for name, ms in out["floors"].items())
    header = ("N", "turns", "turns/s", *LATENCY, "model TTFT p50", "rt CPU ms/turn")
    concurrency: list[tuple[str, ...]] = [(*header, "CPU % rt/loadgen/firestore/machine")]
    for r in out["rounds"]:
        percents = "/".join(f"{percent:.0f}" for percent in r.percent.values())
        row = (str(r.chats), str(len(r.samples)), f"{r.turns_per_s:.1f}", *latency(r.samples))
        concurrency.append((*row, f"{r.cpu_ms_per_turn:.1f}", percents))
    floor = statistics.median(c["floor"])
    cold_rows = [("cold start (ms)", "median", "min-max", "x floor")]
    for key, label in COLD.items():
        median, low, high = (f(c[key]) for f in (statistics.median, min, max))
        span = f"{low * 1000:.0f}-{high * 1000:.0f}"
        cold_rows.append((label, f"{median * 1000:.0f}", span, f"{median / floor:.2f}"))
    return "\n\n".join(
        [
            f"warm, one turn at a time (ms)\n{format_table(rows, {0})}\nfloors (p50 ms): {lowest}",
            f"concurrent WS chats, back to back (ms)\n{format_table(concurrency, {})}",
            format_table(cold_rows, left={0}),
        ]
    )


def summarize(
    args: argparse.Namespace, out: dict[str, Any], wall: float
) -> tuple[str, dict[str, Any]]:
    """One tree's summary line and the fields `write_results` keeps of it."""
    warm, rounds, c = out["warm"], out["rounds"], out["cold"]
    ws, sse = (pct([s.added for s in warm[t]], 50) for t in ("ws", "sse"))
    best = max((r.chats for r in rounds if r.p50 < args.added_ms), default=0)
    ratio = statistics.median(c["health"]) / statistics.median(c["floor"])
    fast, cold_ok = max(ws, sse) < args.added_ms, ratio <= args.ratio
    lowest = out["floors"]
    summary = (
        f"added p50 {'PASS' if fast else 'FAIL'}: WS {ws:.1f} ms, SSE {sse:.1f} ms (target < "
        f"{args.added_ms:g}; floors: Firestore {lowest['firestore_history']:.1f}, "
        f"agent stack {lowest['agent_stack_in_process']:.1f}); largest N with p50 added < "
        f"{args.added_ms:g} ms: {best or 'none'}; cold /health {'PASS' if cold_ok else 'FAIL'}: "
        f"{ratio:.2f}x the floor (target <= {args.ratio:g}x); fresh process's first delta "
        f"{statistics.median(c['from_start']):.2f} s after its start; wall {wall:.0f} s"
    )
    fields = dict(
        added_bound_ms=args.added_ms,
        model_ttft_ms=args.model_ttft,
        ratio_bound=args.ratio,
        switch_interval_s=SWITCH_INTERVAL,
        passed={"added": fast, "cold_start": cold_ok},
        warm={t: {"samples": len(warm[t]), **stats(warm[t])} for t in ("ws", "sse")},
        floors_p50_ms=lowest,
        concurrency=[
            {
                "chats": r.chats,
                "turns": len(r.samples),
                "window_s": round(r.window_s, 2),
                "turns_per_s": round(r.turns_per_s, 1),
                **stats(r.samples),
                "realtime_cpu_ms_per_turn": round(r.cpu_ms_per_turn, 2),
                "cpu_percent_of_one_core": {k: round(v, 1) for k, v in r.percent.items()},
            }
            for r in rounds
        ],
        largest_chats_under_bound=best,
        cold_start_ms={k: [round(v * 1000, 1) for v in values] for k, values in c.items()},
        cold_start_ratio=round(ratio, 3),
    )
    return summary, fields


def comparison(ref: dict[str, Any], head: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(row, REF, HEAD) for the A/B table: warm latencies and service floors (p50, ms), each
    N's added p50, wall and CPU per turn, and each cold start's median: lower is better in all."""
    rows = []
    for transport in ("ws", "sse"):
        a, b = (stats(out["warm"][transport]) for out in (ref, head))
        for key in LATENCY_KEYS:
            rows.append((f"{transport.upper()} {key} ms", a[f"{key}_ms"], b[f"{key}_ms"]))
    rows += [(f"{key} p50 ms", ref["floors"][key], head["floors"][key]) for key in FLOORS[2:]]
    for a, b in zip(ref["rounds"], head["rounds"], strict=True):
        rows.append((f"N={a.chats} added p50 ms", a.p50, b.p50))
        rows.append(
            (f"N={a.chats} wall ms/turn (1000/turns/s)", *(1000 / r.turns_per_s for r in (a, b)))
        )
        rows.append((f"N={a.chats} rt CPU ms/turn", a.cpu_ms_per_turn, b.cpu_ms_per_turn))
    for key, label in list(COLD.items())[1:]:
        medians = (statistics.median(out["cold"][key]) * 1000 for out in (ref, head))
        rows.append((f"{label} (ms)", *medians))
    return rows
