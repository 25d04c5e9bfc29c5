"""The ports of the local stack: the gateway's one HTTP port and each emulator's.

`make run` takes the emulators' ports from `firebase.json`; the tests and `--free-ports` take free
ones, so a test session runs while `make run` is up (docs/architecture.md, "Local stack").
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass

from infra import deployables

# Below Linux's ephemeral range (32768-60999), from which the emulators take their own extra
# ports while starting: a port picked there could be taken again before its service binds it.
FREE_PORT_RANGE = (20000, 32000)


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
