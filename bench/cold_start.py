"""Cold start of each HTTP function against a floor: `make bench` (`python -m bench.cold_start`).

For every HTTP function of `infra/resources.yaml` this measures the time from process start to
the first authenticated success response when the function is served by functions-framework
alone (`functions-framework --source main.py --target <name>`, as deployed), and compares it
with the same measurement of `bench/floor.py`, which imports only functions-framework and
Firestore and does the same irreducible Firestore I/O (build a client, read one document) on its
first request. A second, diagnostic floor, `bench/libs_floor.py`, adds what every route does
with the prescribed libraries (pydantic validation, firebase-admin token verification): each
function's ratio to it shows what the function's own code costs. The emulators come from the
local stack (`infra.local.LocalStack`) and a user token from the Auth emulator, so the probe
goes through the function's real authentication.

The machine may be shared and noisy, so the runs alternate within one invocation (floor, f1, f2,
..., floor, f1, f2, ...) and the table reports medians. The probe of a function is its first GET
route, preferring one that needs a user; a function without a GET route gets its first route
with a JSON body. The exit code is 0 whatever the ratios (this is a report); it is non-zero only
if a function fails to start or answers with an error, which is reported with its log.

`--against REF` (a git ref; HEAD too, for the noise between two runs of the same code) also
starts every function and the libraries floor from a temporary worktree of REF, alternating in
the same rounds (floor, f1@REF, f1@HEAD, f2@REF, f2@HEAD, ...; HEAD first in every other round),
and prints each one's median at REF and at HEAD and the ratio HEAD/REF. The floor, which imports
nothing of the project, runs once a round, from this tree.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import harness
from bench.harness import BenchError, Tree, format_table, on_stack, write_results
from infra import deployables
from infra.auth_emulator import AuthEmulator
from infra.deployables import ROOT
from infra.local import LocalStack
from infra.ports import free_port
from infra.services import Service
from shared.auth.tokens import Access
from shared.web.router import Route, Router

FLOOR = "floor"
FLOOR_SOURCE = "bench/floor.py"
LIBS_FLOOR = "libs_floor"  # diagnostic: the floor plus pydantic and firebase-admin's auth
LIBS_FLOOR_SOURCE = "bench/libs_floor.py"
SUCCESS = (200, 201, 204)
START_TIMEOUT = 30.0  # seconds from Popen to the first success response
CONNECT_TIMEOUT = 0.25
POLL_INTERVAL = 0.005


@dataclass(frozen=True)
class Target:
    """One function to start and the request that proves it is up."""

    name: str
    source: str
    method: str = "GET"
    path: str = "/"
    body: bool = False

    @property
    def probe(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Result:
    target: Target
    samples_ms: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)


def probe_route(router: Router) -> Route:
    """The first GET route, preferring one that needs a user (and one without path parameters);
    without a GET route, the first route."""
    gets = [route for route in router.routes if route.method == "GET"]
    if not gets:
        return router.routes[0]
    return min(gets, key=lambda route: (route.access is Access.PUBLIC, bool(route.path_params)))


def targets() -> list[Target]:
    """The floor, the diagnostic libraries floor, then every HTTP function in
    `infra/resources.yaml` order."""
    routers = deployables.http_routers()
    found = [Target(FLOOR, FLOOR_SOURCE), Target(LIBS_FLOOR, LIBS_FLOOR_SOURCE)]
    for function in deployables.functions():
        if function.event_driven:
            continue
        route = probe_route(routers[function.name])
        path = route.path
        for name in route.path_params:
            path = path.replace(f"{{{name}}}", f"bench-{name}")
        found.append(
            Target(
                function.name,
                "main.py",  # the entry module production loads
                method=route.method,
                path=path,
                body=route.method != "GET",
            )
        )
    return found


def functions_framework_bin() -> str:
    beside = Path(sys.executable).parent / "functions-framework"
    return str(beside) if beside.exists() else "functions-framework"


class Runner:
    def __init__(self, env: dict[str, str], token: str, log_dir: Path):
        self.env = env
        self.headers = {"Authorization": f"Bearer {token}"}
        self.log_dir = log_dir
        self.command = functions_framework_bin()
        self.count = 0

    def cold_start(self, target: Target, tree: Tree | None = None) -> float:
        """Milliseconds from just before Popen to the first success response of `target`,
        served from `tree` (this one by default)."""
        self.count += 1
        port = free_port()
        url = f"http://127.0.0.1:{port}{target.path}"
        body = {"email": f"bench-{os.getpid()}-{self.count}@example.com"} if target.body else None
        service = Service(
            f"{target.name}-{tree.name}" if tree else target.name,
            [
                self.command,
                "--source",
                target.source,
                "--target",
                target.name,
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            port,
            cwd=tree.path if tree else ROOT,
            env=tree.env(self.env) if tree else self.env,
        )
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
            started = time.perf_counter()
            service.start(self.log_dir)
            process = service.process
            assert process is not None
            try:
                while True:
                    remaining = started + START_TIMEOUT - time.perf_counter()
                    if remaining <= 0:
                        raise BenchError(
                            f"{target.name}: no answer to {target.probe} within "
                            f"{START_TIMEOUT:.0f} s\n{service.log_tail()}"
                        )
                    try:
                        reply = client.request(
                            target.method,
                            url,
                            headers=self.headers,
                            json=body,
                            timeout=httpx.Timeout(remaining, connect=CONNECT_TIMEOUT),
                        )
                    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError):
                        if process.poll() is not None:
                            raise BenchError(
                                f"{target.name}: functions-framework exited "
                                f"({process.returncode}) before answering\n{service.log_tail()}"
                            ) from None
                        time.sleep(POLL_INTERVAL)
                        continue
                    except httpx.TimeoutException as error:
                        raise BenchError(
                            f"{target.name}: {target.probe} timed out ({error!r})\n"
                            f"{service.log_tail()}"
                        ) from None
                    elapsed = time.perf_counter() - started
                    if reply.status_code not in SUCCESS:
                        raise BenchError(
                            f"{target.name}: {target.probe} answered {reply.status_code}: "
                            f"{reply.text[:2000]}\n{service.log_tail()}"
                        )
                    return elapsed * 1000
            finally:
                service.stop()


def run(
    stack: LocalStack,
    plan: list[Target],
    rounds: int,
    warmup: int,
    log_dir: Path,
    sides: list[Tree],
) -> dict[str, list[Result]]:
    """Each side's results in `plan` order (the floor's, from this tree, shared)."""
    env = {**os.environ, **stack.client_env(), "ENVIRONMENT": "development"}
    auth_host = stack.client_env()["FIREBASE_AUTH_EMULATOR_HOST"]
    user = AuthEmulator(auth_host, env["GOOGLE_CLOUD_PROJECT"]).sign_up()
    runner = Runner(env, user.token, log_dir)
    head = sides[-1]
    results = {side.name: [Result(target) for target in plan] for side in sides}
    for side in sides:
        results[side.name][0] = results[head.name][0]
    width = max(len(target.name) for target in plan)
    for index in range(warmup + rounds):
        warming = index < warmup
        label = f"warm-up {index + 1}" if warming else f"round {index - warmup + 1}/{rounds}"
        times = []
        for k, target in enumerate(plan):
            for side in [head] if target.name == FLOOR else harness.alternated(sides, index):
                elapsed = runner.cold_start(target, side if len(sides) > 1 else None)
                at = f"@{side.name}" if len(sides) > 1 and target.name != FLOOR else ""
                times.append(f"{target.name}{at} {elapsed:.0f}")
                if not warming:
                    results[side.name][k].samples_ms.append(elapsed)
        print(f"  {label:<{width + 8}} " + ", ".join(times) + " ms", file=sys.stderr, flush=True)
    return results


def comparison(results: dict[str, list[Result]]) -> list[tuple[str, float, float]]:
    """(function and probe, REF median, HEAD median) of every row, the floor's first."""
    ref, head = results.values()
    return [
        (f"{a.target.name} {a.target.probe}", a.median, b.median)
        for a, b in zip(ref, head, strict=True)
    ]


def report(results: list[Result], target_ratio: float) -> tuple[str, list[dict[str, Any]]]:
    floor = results[0].median
    libs_floor = next(r.median for r in results if r.target.name == LIBS_FLOOR)
    rows = []
    header = (
        "function",
        "probe",
        "median ms",
        "min-max ms",
        "x floor",
        f"<= {target_ratio}x",
        "x libs_floor",
    )
    records = []
    for result in results:
        ratio = result.median / floor
        is_floor = result.target.name in (FLOOR, LIBS_FLOOR)
        passed = ratio <= target_ratio
        verdict = "-" if is_floor else ("PASS" if passed else "FAIL")
        rows.append(
            (
                result.target.name,
                result.target.probe,
                f"{result.median:.0f}",
                f"{min(result.samples_ms):.0f}-{max(result.samples_ms):.0f}",
                f"{ratio:.2f}",
                verdict,
                "-" if is_floor else f"{result.median / libs_floor:.2f}",
            )
        )
        records.append(
            {
                "function": result.target.name,
                "source": result.target.source,
                "probe": result.target.probe,
                "samples_ms": [round(sample, 1) for sample in result.samples_ms],
                "median_ms": round(result.median, 1),
                "min_ms": round(min(result.samples_ms), 1),
                "max_ms": round(max(result.samples_ms), 1),
                "ratio": round(ratio, 3),
                "ratio_to_libs_floor": round(result.median / libs_floor, 3),
                "pass": None if is_floor else passed,
            }
        )
    return format_table([header, *rows], left={0, 1, 5}), records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7, help="measured rounds (default 7)")
    parser.add_argument(
        "--target", type=float, default=1.2, help="pass if median <= TARGET x floor (1.2)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded rounds first (default 1)")
    parser.add_argument(
        "--against", metavar="REF", help="also run a git ref's functions, alternating (A/B)"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error("--rounds must be >= 1 and --warmup >= 0")

    began = time.monotonic()
    started_at = datetime.now(UTC)
    plan = targets()
    print(
        f"cold start: {', '.join(t.name for t in plan)}; {args.rounds} rounds "
        f"(+{args.warmup} warm-up), alternating",
        file=sys.stderr,
        flush=True,
    )

    def work(stack: LocalStack, workdir: Path) -> tuple[list[Tree], dict[str, list[Result]]]:
        with harness.trees(args.against) as sides:
            return sides, run(stack, plan, args.rounds, args.warmup, workdir, sides)

    sides, by_side = on_stack(work)
    wall = time.monotonic() - began

    ab = comparison(by_side) if len(sides) > 1 else []
    results = by_side["HEAD"]
    table, records = report(results, args.target)
    print(harness.compare(ab, sides, "median ms from Popen to the first success") if ab else table)
    failed = [r for r in records if r["pass"] is False]
    measured = [r for r in records if r["pass"] is not None]
    summary = (
        f"{len(measured) - len(failed)}/{len(measured)} functions within {args.target}x of the "
        f"floor ({results[0].median:.0f} ms median, {args.rounds} round"
        f"{'s' if args.rounds != 1 else ''}, wall {wall:.0f} s)"
    )
    if failed:
        summary += "; FAIL: " + ", ".join(f"{r['function']} {r['ratio']:.2f}x" for r in failed)
    libs = next(r for r in records if r["function"] == LIBS_FLOOR)
    worst = max(measured, key=lambda r: r["ratio_to_libs_floor"])
    summary += (
        f"; the libraries floor (pydantic + firebase-admin auth) is {libs['ratio']:.2f}x the "
        f"floor, and the slowest function {worst['ratio_to_libs_floor']:.2f}x it "
        f"({worst['function']})"
    )
    extra: dict[str, Any] = {}
    if ab:
        ratios = [head / ref for _, ref, head in ab[1:]]
        slowest = max(range(len(ratios)), key=ratios.__getitem__)
        summary = (
            f"HEAD/REF ({args.against} = {sides[0].commit[:7]}): median "
            f"{statistics.median(ratios):.2f}, largest {ratios[slowest]:.2f} "
            f"({ab[1 + slowest][0]}); HEAD alone: {summary}"
        )
        extra["against"] = {"ref": args.against, "commit": sides[0].commit}
        extra["head_commit"] = sides[-1].commit
        extra["ref_functions"] = report(by_side["REF"], args.target)[1]
        extra["comparison"] = harness.comparison_records(ab)
    print(summary, flush=True)
    write_results(
        harness.results_name("cold_start", args.against),
        started_at,
        wall,
        summary,
        rounds=args.rounds,
        warmup=args.warmup,
        target_ratio=args.target,
        floor_median_ms=round(results[0].median, 1),
        functions=records,
        **extra,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
