"""Browsers on other origins (docs/api.md, "Conventions"): which origins may call the API, what
a preflight answers, and what every real response carries.

One policy for the REST functions (`shared.web.router`) and the realtime service
(`realtime.app`'s middleware), as plain header dictionaries that werkzeug and Starlette
responses both take. Neither framework's own CORS support fits the contract: Starlette's
`CORSMiddleware` answers a preflight with 200 and one configured method list for every path,
where the contract wants 204 and exactly the path's methods, and werkzeug has the header fields
but no policy; so the policy is these few functions (docs/decisions.md, "CORS").
"""

from __future__ import annotations

import re

from shared.core.settings import get_settings

ALLOWED_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key")
EXPOSED_HEADERS = (
    "Idempotent-Replayed",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)
MAX_AGE_SECONDS = 600
# Development: a page served from any local port.
_LOCAL = re.compile(r"^http://(localhost|127\.0\.0\.1)(:\d{1,5})?$")


def allowed(origin: str | None) -> bool:
    """Whether a page on `origin` may read the API's answers."""
    if not origin:
        return False
    settings = get_settings()
    if origin in settings.allowed_origins:
        return True
    return not settings.production and _LOCAL.match(origin) is not None


def allow(methods: list[str]) -> str:
    """The `Allow` header of a path: exactly its declared methods (docs/api.md; OPTIONS, which
    every path answers, and HEAD, which every GET answers, are implied)."""
    return ", ".join(methods)


def preflight(origin: str | None, methods: list[str]) -> dict[str, str]:
    """The headers of a 204 answer to `OPTIONS` on a path with these methods: `Allow`, and the
    CORS grant if `origin` is allowed (a refused origin gets no `Access-Control-*` at all)."""
    headers = {"Allow": allow(methods), "Vary": "Origin"}
    if allowed(origin):
        assert origin is not None
        headers |= {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(methods),
            "Access-Control-Allow-Headers": ", ".join(ALLOWED_HEADERS),
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        }
    return headers


def response_headers(origin: str | None) -> dict[str, str]:
    """What a real response (an error too) adds for a page on `origin`."""
    if not allowed(origin):
        return {"Vary": "Origin"} if origin else {}
    assert origin is not None
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": ", ".join(EXPOSED_HEADERS),
        "Vary": "Origin",
    }
