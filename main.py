"""Cloud Functions entry module: every function deploys from this repository with its own
`--entry-point`, and only the module of that function is imported (PEP 562 `__getattr__`), so a
function's cold start never pays for another's imports.

A function named `x` lives in `functions/x.py` (infra/resources.yaml declares it so, and a test
holds the two together); the module is found by that convention, without reading the YAML file
on the cold path.
"""

from __future__ import annotations

import importlib
import re
from typing import Any


def __getattr__(name: str) -> Any:
    from shared.core.settings import get_settings

    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise AttributeError(name)
    get_settings()  # a bad configuration stops the function from starting, not every request
    try:
        module = importlib.import_module(f"functions.{name}")
    except ModuleNotFoundError:
        raise AttributeError(name) from None
    return getattr(module, name)


def _answer_framework_errors_in_our_shape() -> None:
    """functions-framework's Flask app refuses, before any function runs, a path its own URL rule
    cannot match (one with a newline in it): it answers that 404 in the API's JSON shape too.
    Registered only when functions-framework loads this module as a function's source."""
    import functions_framework

    register = getattr(functions_framework, "errorhandler", None)
    if register is None:
        return

    @register(404)
    def not_found(error: Exception) -> Any:
        from shared.web.router import json_response

        return json_response({"detail": "no such route"}, 404)


_answer_framework_errors_in_our_shape()
