"""One round of the listen benchmark, summarized (`bench.listen`): N streams' latencies, lag,
losses and CPU, as a table row, a stored record and a progress line."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.harness import format_table
from bench.listen_clients import Client


def p99(samples: list[float], default: float) -> float:
    if len(samples) < 2:
        return default
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


@dataclass
class Round:
    """N streams of `seconds` each: what was measured, summarized once."""

    streams: int
    seconds: int
    clients: list[Client]
    window_s: float  # the steady state, all N streaming
    cpu: dict[str, float]  # % of one core over `window_s`, by party (as in the results file)
    errors: list[str]
    provider_connections: int
    lost_streams: int  # bytes reaching the double differ from those sent
    realtime_rss_mb: float

    def __post_init__(self) -> None:
        self.latencies = [ms for client in self.clients for ms in client.latencies_ms]
        lags = [lag for client in self.clients for lag in client.lag_s]
        self.expected = self.streams * self.seconds
        self.received = sum(len(client.labels) for client in self.clients)
        self.lost = bool(self.lost_streams or self.errors or self.received < self.expected)
        self.p50 = statistics.median(self.latencies) if self.latencies else math.inf
        self.p99 = p99(self.latencies, math.inf)
        self.max_ms = max(self.latencies, default=math.inf)
        self.lag_p99_ms = p99(lags, 0.0) * 1000
        self.lag_max_ms = max(lags, default=0.0) * 1000
        self.cpu_per_stream = self.cpu["realtime"] / self.streams

    def meets(self, p99_ms: float) -> bool:
        return not self.lost and self.p99 < p99_ms


def table(rounds: list[Round], p99_ms: float) -> str:
    columns: dict[str, Callable[[Round], str]] = {
        "N": lambda r: str(r.streams),
        "transcripts": lambda r: f"{r.received}/{r.expected}",
        "p50 ms": lambda r: f"{r.p50:.1f}",
        "p99 ms": lambda r: f"{r.p99:.1f}",
        "max ms": lambda r: f"{r.max_ms:.1f}",
        "lost": lambda r: "yes" if r.lost else "no",
        "send lag p99 ms": lambda r: f"{r.lag_p99_ms:.1f}",
        "rt CPU/stream %": lambda r: f"{r.cpu_per_stream:.2f}",
        "rt CPU %": lambda r: f"{r.cpu['realtime']:.0f}",
        "loadgen (double) %": lambda r: (
            f"{r.cpu['load_generator']:.0f} ({r.cpu['load_generator_double_thread']:.0f})"
        ),
        "firestore %": lambda r: f"{r.cpu['firestore_emulator']:.0f}",
        "machine %": lambda r: f"{r.cpu['machine']:.0f}",
        "rt RSS MB": lambda r: f"{r.realtime_rss_mb:.0f}",
        f"p99<{p99_ms:g}ms": lambda r: "ok" if r.meets(p99_ms) else "over",
    }
    rows = [tuple(cell(r) for cell in columns.values()) for r in rounds]
    return format_table([tuple(columns), *rows], left={len(columns) - 1})


def record(r: Round, p99_ms: float) -> dict[str, Any]:
    def rounded(value: float) -> float | None:
        return round(value, 2) if math.isfinite(value) else None

    return {
        "streams": r.streams,
        "audio_seconds": r.seconds,
        "window_s": round(r.window_s, 2),
        "transcripts_expected": r.expected,
        "transcripts_received": r.received,
        "latency_p50_ms": rounded(r.p50),
        "latency_p99_ms": rounded(r.p99),
        "latency_max_ms": rounded(r.max_ms),
        "lost": r.lost,
        "streams_with_byte_mismatch": r.lost_streams,
        "provider_connections": r.provider_connections,
        "client_send_lag_p99_ms": round(r.lag_p99_ms, 2),
        "client_send_lag_max_ms": round(r.lag_max_ms, 2),
        "bytes_sent_per_stream": sorted({c.sent_bytes for c in r.clients}),
        "cpu_percent_of_one_core": {
            "realtime_per_stream": round(r.cpu_per_stream, 3),
            **{party: round(percent, 1) for party, percent in r.cpu.items()},
        },
        "realtime_rss_mb": round(r.realtime_rss_mb, 1),
        "meets_p99": r.meets(p99_ms),
        "errors": r.errors[:20],
    }


def progress(r: Round) -> str:
    return (
        f"  N={r.streams}: p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms, {r.received}/{r.expected} "
        f"transcripts, lost {'yes' if r.lost else 'no'}, realtime CPU {r.cpu['realtime']:.0f}% "
        f"({r.cpu_per_stream:.2f}%/stream), load generator {r.cpu['load_generator']:.0f}%"
        + (f"; {len(r.errors)} errors, first: {r.errors[0]}" if r.errors else "")
    )
