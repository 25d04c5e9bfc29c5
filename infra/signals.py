"""The signals that stop the local stack as Ctrl-C does, and handling them within a block."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

# What a CI job's timeout or a closed terminal sends: they stop the stack as Ctrl-C does.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


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
