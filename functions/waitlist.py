"""POST /waitlist and POST /email: sign an address up, form or JSON."""

from __future__ import annotations

import functions_framework
from werkzeug.wrappers import Request, Response

from shared.auth.tokens import Access
from shared.core.models import Status
from shared.resources import waitlist as waitlist_resource
from shared.resources.waitlist import EmailSignup
from shared.web.router import Call, Router

router = Router("waitlist")


@router.route(
    "POST", "/waitlist", access=Access.PUBLIC, body=EmailSignup, form=True, response=Status
)
def join_waitlist(call: Call) -> Status:
    """Join the waitlist; a repeat is a no-op."""
    waitlist_resource.join(call.body.email, source="waitlist")
    return Status()


@router.route("POST", "/email", access=Access.PUBLIC, body=EmailSignup, form=True, response=Status)
def join_by_email(call: Call) -> Status:
    """Leave an address (ODAI's sign-up form); a repeat is a no-op."""
    waitlist_resource.join(call.body.email, source="email")
    return Status()


@functions_framework.http
def waitlist(request: Request) -> Response:
    return router(request)
