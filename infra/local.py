"""The local stack: the emulators, Pub/Sub topics and subscriptions, and the gateway on one port.

`python -m infra.local` is `make run`; the tests start the same `LocalStack` on free ports, so
they run while `make run` is up. Every process is started in a session of its own (the emulator
launchers are wrapper scripts whose JVM would outlive a plain kill) and stopped by its process
group on Ctrl-C, SIGTERM or SIGHUP, after which the ports are checked free. If whoever started the
stack dies without stopping it (SIGKILL, a crash), the stack's `Guard` stops those groups.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from infra import deployables
from infra.deployables import ROOT
from infra.prerequisites import FIREBASE_BIN, check_prerequisites

PROJECT = "demo-mnemo"
# Below Linux's ephemeral range (32768-60999), from which the emulators take their own extra
# ports while starting: a port picked there could be taken again before its service binds it.
FREE_PORT_RANGE = (20000, 32000)
# What a CI job's timeout or a closed terminal sends: they stop the stack as Ctrl-C does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, outside the ephemeral range."""
    for _ in range(1000):
        port = random.randrange(*FREE_PORT_RANGE)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SystemExit(f"no free port in {FREE_PORT_RANGE}")


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    """A signal handler that raises KeyboardInterrupt, as Ctrl-C does, so `finally` blocks run."""
    raise KeyboardInterrupt


@contextmanager
def handling(
    signals: tuple[signal.Signals, ...],
    handler: Callable[[int, FrameType | None], Any] | int,
) -> Iterator[None]:
    """`handler` (a function, `signal.SIG_IGN`...) for each of `signals` within the block, and the
    previous handlers after it. From the main thread only, as `signal.signal`."""
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, signal.SIG_DFL if before is None else before)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stop_groups(pgids: set[int], timeout: float = 10.0) -> set[int]:
    """SIGTERM to each process group, then SIGKILL to those still there after `timeout` (which
    it returns)."""
    for pgid in pgids:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    left = {pgid for pgid in pgids if _group_alive(pgid)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {pgid for pgid in left if _group_alive(pgid)}
    for pgid in left:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return left


class Guard:
    """Stops a stack's process groups if the process that started them dies without stopping them
    (SIGKILL, a crash): a small process in a session of its own, started before the services,
    which the starter tells through a pipe of each process group it starts (`+pgid`) and each it
    has stopped (`-pgid`). When the pipe ends (the starter closed it, or died) or the starter is no
    longer its parent (the check the `make run` launcher makes on `make`), it stops the groups left,
    by their ids, and exits: with none left after a clean stop, at once."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, log_dir: Path) -> None:
        with (log_dir / "guard.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from infra.local import Guard; Guard.watch()"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                bufsize=0,  # each line in one write, at once
            )

    def _tell(self, line: str) -> None:
        if self.process is not None and self.process.stdin is not None:
            with suppress(OSError):  # the guard is gone: nothing to tell
                self.process.stdin.write(line.encode())

    def add(self, pgid: int) -> None:
        self._tell(f"+{pgid}\n")

    def remove(self, pgid: int) -> None:
        self._tell(f"-{pgid}\n")

    def stop(self) -> None:
        """Closes the pipe: the guard stops what it was not told was stopped, and exits."""
        if self.process is None:
            return
        if self.process.stdin is not None:
            with suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    @staticmethod
    def watch() -> None:
        """The guard process: reads the pipe on stdin until it ends or the starter is gone."""
        starter = os.getppid()
        groups: set[int] = set()
        pending = b""
        while True:
            orphaned = os.getppid() != starter  # then only what is already in the pipe
            if not select.select([0], [], [], 0 if orphaned else 0.2)[0]:
                if orphaned:
                    break
                continue
            chunk = os.read(0, 4096)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                pgid = int(line[1:])
                if line.startswith(b"+"):
                    groups.add(pgid)
                else:
                    groups.discard(pgid)
        if groups:
            print(f"the stack's starter is gone: stopping process groups {sorted(groups)}")
            killed = stop_groups(groups)
            print(f"stopped; SIGKILL to {sorted(killed)}" if killed else "stopped", flush=True)


@dataclass(frozen=True)
class Ports:
    http: int
    firestore: int
    pubsub: int
    auth: int
    hub: int
    logging: int

    @classmethod
    def from_firebase_json(cls, http: int) -> Ports:
        emulators = deployables.firebase_config()["emulators"]
        return cls(
            http=http,
            **{
                name: int(emulators[name]["port"])
                for name in ("firestore", "pubsub", "auth", "hub", "logging")
            },
        )

    @classmethod
    def free(cls, http: int | None = None) -> Ports:
        """Six distinct free ports (the HTTP one given or free too)."""
        chosen = {http} if http else set()
        while len(chosen) < 6:
            chosen.add(free_port())
        if http:
            chosen.discard(http)
        ports = sorted(chosen)
        if not http:
            http = ports.pop()
        return cls(http, *ports)


@dataclass
class Service:
    name: str
    command: list[str]
    port: int
    ready_path: str = "/"
    cwd: Path | None = None
    env: dict[str, str] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    def start(self, log_dir: Path | None) -> None:
        """Start in a session of its own, logging to `log_dir`, or to this terminal if None."""
        if port_open(self.port):
            raise SystemExit(f"{self.name}: port {self.port} is already in use")
        self.log_path = log_dir / f"{self.name}.log" if log_dir else None
        with self.log_path.open("wb") if self.log_path else open(os.devnull, "wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log if self.log_path else None,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, deadline: float) -> None:
        assert self.process is not None
        url = f"http://127.0.0.1:{self.port}{self.ready_path}"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"{self.name} exited ({self.process.returncode}):\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)
        raise SystemExit(f"{self.name} did not become ready on {url}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        # The wrapper may be gone while the JVM (same group) still holds the port.
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)


def uvicorn_service(
    name: str, app: str, port: int, env: dict[str, str], graceful_seconds: int = 10
) -> Service:
    """The ASGI `app` served by uvicorn on 127.0.0.1:`port` (as the realtime image serves it),
    with this process's environment plus `env`; ready when `/health` answers."""
    return Service(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--timeout-graceful-shutdown",
            str(graceful_seconds),
        ],
        port,
        ready_path="/health",
        cwd=ROOT,
        env={**os.environ, **env},
    )


class LocalStack:
    """Emulators + Pub/Sub set-up + the gateway, started and stopped as one."""

    def __init__(
        self,
        ports: Ports,
        workdir: Path,
        gateway_to_terminal: bool = False,
        gateway_env: dict[str, str] | None = None,
        scheduled: bool = True,
    ):
        self.ports = ports
        self.workdir = workdir
        self.gateway_env = gateway_env or {}
        self.gateway_to_terminal = gateway_to_terminal
        self.services: list[Service] = []
        self.guard = Guard()
        # Publish to the scheduled topics as Cloud Scheduler does (the tests tick by hand).
        self.ticker = Ticker(ports.pubsub) if scheduled else None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    def client_env(self) -> dict[str, str]:
        """What a client (or a function) needs to reach this stack's emulators."""
        return {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{self.ports.firestore}",
            "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.ports.pubsub}",
            "FIREBASE_AUTH_EMULATOR_HOST": f"127.0.0.1:{self.ports.auth}",
        }

    def _auth_config(self) -> Path:
        config = {
            "emulators": {
                "singleProjectMode": True,
                "auth": {"host": "127.0.0.1", "port": self.ports.auth},
                "hub": {"host": "127.0.0.1", "port": self.ports.hub},
                "logging": {"host": "127.0.0.1", "port": self.ports.logging},
                "ui": {"enabled": False},
            }
        }
        path = self.workdir / "firebase.json"
        path.write_text(json.dumps(config))
        return path

    def start(self) -> None:
        sdk_root = check_prerequisites()
        self.workdir.mkdir(parents=True, exist_ok=True)
        gcloud = str(sdk_root / "bin" / "gcloud")
        quiet = {**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        emulators = [
            Service(
                "firestore",
                [
                    gcloud,
                    "emulators",
                    "firestore",
                    "start",
                    f"--host-port=127.0.0.1:{self.ports.firestore}",
                    # Production's rules, so the tests show that apps cannot go around the API.
                    f"--rules={ROOT / deployables.firebase_config()['firestore']['rules']}",
                ],
                self.ports.firestore,
                env=quiet,
            ),
            Service(
                "pubsub",
                [
                    gcloud,
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    f"--host-port=127.0.0.1:{self.ports.pubsub}",
                    f"--project={PROJECT}",
                ],
                self.ports.pubsub,
                env=quiet,
            ),
            Service(
                "auth",
                [
                    str(FIREBASE_BIN),
                    "emulators:start",
                    "--only",
                    "auth",
                    "--project",
                    PROJECT,
                    "--config",
                    str(self._auth_config()),
                ],
                self.ports.auth,
                cwd=self.workdir,
                env={
                    **os.environ,
                    "NO_UPDATE_NOTIFIER": "1",
                    "FIREBASE_CLI_DISABLE_UPDATE_CHECK": "1",
                },
            ),
        ]
        try:
            self.guard.start(self.workdir)
            for service in emulators:
                self._start(service, self.workdir)
            deadline = time.monotonic() + 120
            for service in emulators:
                service.wait_ready(deadline)
            create_pubsub(self.client_env(), self.ports.http)
            gateway = uvicorn_service(
                "gateway",
                "infra.gateway:app",
                self.ports.http,
                {
                    **self.client_env(),
                    "ENVIRONMENT": "development",
                    "PORT": str(self.ports.http),
                    "REALTIME_URL": f"http://localhost:{self.ports.http}",
                    **self.gateway_env,
                },
            )
            self._start(gateway, None if self.gateway_to_terminal else self.workdir)
            gateway.wait_ready(time.monotonic() + 60)
            if self.ticker is not None:
                self.ticker.start()
        except BaseException:
            self.stop()
            raise

    def _start(self, service: Service, log_dir: Path | None) -> None:
        self.services.append(service)
        service.start(log_dir)
        assert service.process is not None
        self.guard.add(service.process.pid)  # its process group's id

    def stop(self) -> None:
        if self.ticker is not None:
            self.ticker.stop()
        for service in reversed(self.services):
            service.stop()
            if service.process is not None:
                self.guard.remove(service.process.pid)
        self.services.clear()
        self.guard.stop()


class Ticker:
    """Cloud Scheduler's part locally: publishes `{}` to every topic with a `schedule` in
    `infra/resources.yaml`, once per period (the first after one period), through the Pub/Sub
    emulator's REST API, from a thread of the launcher."""

    def __init__(self, pubsub_port: int, every_seconds: float | None = None):
        self.url = f"http://127.0.0.1:{pubsub_port}/v1/projects/{PROJECT}/topics"
        self.topics = [topic for topic in deployables.topics() if topic.schedule]
        self.every_seconds = every_seconds  # overrides the schedules (tests)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self, topic: str) -> None:
        body = json.dumps({"messages": [{"data": "e30="}]}).encode()  # base64 of "{}"
        request = urllib.request.Request(
            f"{self.url}/{topic}:publish",
            data=body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()

    def _run(self) -> None:
        due = {
            topic.name: time.monotonic() + (self.every_seconds or topic.every_seconds or 60)
            for topic in self.topics
        }
        while not self._stopping.wait(0.1):
            for topic in self.topics:
                if time.monotonic() < due[topic.name]:
                    continue
                due[topic.name] += self.every_seconds or topic.every_seconds or 60
                try:
                    self.tick(topic.name)
                except (OSError, urllib.error.URLError) as error:
                    print(f"ticker: could not publish to {topic.name}: {error}", file=sys.stderr)


def create_pubsub(env: dict[str, str], http_port: int) -> None:
    """Create the topics and push subscriptions of `infra/resources.yaml` in the emulator,
    pushing to the gateway as production pushes to each function."""
    import google.cloud.pubsub_v1 as pubsub_v1
    from google.api_core.exceptions import AlreadyExists
    from google.protobuf.duration_pb2 import Duration

    # The clients find the emulator through the environment, read when they are built.
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    try:
        policy = deployables.subscription_policy()
        for topic in deployables.topics():
            with suppress(AlreadyExists):
                publisher.create_topic(name=publisher.topic_path(PROJECT, topic.name))
        for subscription in deployables.subscriptions():
            topic_path = publisher.topic_path(PROJECT, subscription.topic)
            request: dict[str, object] = {
                "name": subscriber.subscription_path(PROJECT, subscription.name),
                "topic": topic_path,
                "push_config": {
                    "push_endpoint": f"http://127.0.0.1:{http_port}/_events/{subscription.function}/"
                    f"{topic_path}"
                },
                "ack_deadline_seconds": deployables.ack_deadline(subscription.function),
                "retry_policy": {
                    "minimum_backoff": Duration(seconds=policy["min_backoff_seconds"]),
                    "maximum_backoff": Duration(seconds=policy["max_backoff_seconds"]),
                },
            }
            if subscription.dead_letter_topic:
                request["dead_letter_policy"] = {
                    "dead_letter_topic": publisher.topic_path(
                        PROJECT, subscription.dead_letter_topic
                    ),
                    "max_delivery_attempts": policy["max_delivery_attempts"],
                }
            with suppress(AlreadyExists):
                subscriber.create_subscription(request=request)
    finally:
        subscriber.close()
        publisher.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run Mnemo's local stack (make run).")
    parser.add_argument(
        "--free-ports", action="store_true", help="emulators on free ports, not firebase.json's"
    )
    args = parser.parse_args()
    http_port = int(os.environ.get("PORT", "8080"))
    ports = Ports.free(http_port) if args.free_ports else Ports.from_firebase_json(http_port)

    for signum in (signal.SIGINT, *STOP_SIGNALS):
        signal.signal(signum, interrupt)
    stack = LocalStack(ports, ROOT / ".local" / f"stack-{ports.http}", gateway_to_terminal=True)
    try:
        stack.start()
        env = stack.client_env()
        print(
            f"Mnemo is up on http://localhost:{ports.http} (emulator logs in {stack.workdir})\n"
            f"  Firestore emulator      {env['FIRESTORE_EMULATOR_HOST']}\n"
            f"  Pub/Sub emulator        {env['PUBSUB_EMULATOR_HOST']}\n"
            f"  Firebase Auth emulator  {env['FIREBASE_AUTH_EMULATOR_HOST']}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        gateway = stack.services[-1]
        assert gateway.process is not None
        # `make` does not pass SIGTERM on to its recipe: if it dies, so does the stack.
        parent = os.getppid()
        while gateway.process.poll() is None:
            if os.getppid() != parent:
                raise KeyboardInterrupt
            time.sleep(0.2)
        print(f"the gateway exited:\n{gateway.log_tail()}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopping…", flush=True)
    finally:
        for signum in (signal.SIGINT, *STOP_SIGNALS):
            signal.signal(signum, signal.SIG_IGN)
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
