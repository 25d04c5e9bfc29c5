"""The local stack: the emulators, Pub/Sub topics and subscriptions, and the gateway on one port,
started and stopped as one (docs/architecture.md, "Local stack").

`python -m infra.local` is `make run`; the tests start the same `LocalStack` on free ports, so
they run while `make run` is up. Every process is started in a session of its own and stopped by
its process group on Ctrl-C, SIGTERM or SIGHUP, after which the ports are checked free. If whoever
started the stack dies without stopping it (SIGKILL, a crash), the stack's `Guard` stops those
groups.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from infra.deployables import ROOT
from infra.emulators import PROJECT, create_pubsub, emulator_services, write_auth_config
from infra.guard import Guard
from infra.ports import Ports
from infra.prerequisites import check_prerequisites
from infra.scheduler import Ticker
from infra.services import Service, uvicorn_service
from infra.signals import STOP_SIGNALS, interrupt


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

    def start(self) -> None:
        sdk_root = check_prerequisites()
        self.workdir.mkdir(parents=True, exist_ok=True)
        emulators = emulator_services(
            self.ports, sdk_root, write_auth_config(self.ports, self.workdir)
        )
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
