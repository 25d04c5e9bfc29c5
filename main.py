"""Cloud Functions entry module: every function deploys from this repository with its own
`--entry-point`, and only the module of that function is imported (PEP 562 `__getattr__`), so a
function's cold start never pays for another's imports."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    from shared import deployables
    from shared.settings import get_settings

    get_settings()  # a bad configuration stops the function from starting, not every request

    try:
        module = deployables.function(name).load()
    except KeyError:
        raise AttributeError(name) from None
    return getattr(module, name)
