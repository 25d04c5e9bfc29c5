"""WebSocket authentication: the same `shared.auth` as the REST functions.

A browser cannot read an HTTP status from a refused handshake, so a bad token is accepted and
then closed with 1008 (policy violation) and the reason (docs/api.md, "Conventions").
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from shared.auth.tokens import Access, Caller, token_from_header
from shared.web.router import api_error
from shared.web.streaming import authenticated

POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013
MAX_REASON_BYTES = 123


def close_reason(text: str) -> str:
    """A close reason that fits the protocol's 123 bytes."""
    encoded = text.encode()[:MAX_REASON_BYTES]
    return encoded.decode("utf-8", "ignore")


async def authenticate_websocket(
    websocket: WebSocket, access: Access = Access.USER
) -> Caller | None:
    """The caller of `websocket` (`?token=` or the Authorization header), or None after
    accepting and closing the socket with the reason."""
    token = websocket.query_params.get("token") or token_from_header(
        websocket.headers.get("authorization")
    )
    try:
        return await authenticated(token, access)
    except Exception as error:
        refusal = api_error(error)
        if refusal is None:
            raise
        code = TRY_AGAIN_LATER if refusal.status == 503 else POLICY_VIOLATION
        await websocket.accept()
        await websocket.close(code=code, reason=close_reason(str(refusal.detail)))
        return None
