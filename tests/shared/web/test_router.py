"""`shared.web.router` on its own, with a route set built here: matching, validation and the
one error shape, in this process."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from shared.auth.tokens import Access
from shared.core.errors import Conflict
from shared.web.router import MAX_BODY_BYTES, Call, Router


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(default=10, ge=1, le=100)


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1)
    count: int = 1


class Stored(BaseModel):
    id: str
    text: str


router = Router("notes")


@router.route("GET", "/notes", access=Access.PUBLIC, query=Page)
def list_notes(call: Call) -> dict[str, Any]:
    """The notes.

    Paged."""
    return {"limit": call.query.limit}


@router.route("POST", "/notes", access=Access.PUBLIC, body=Note, status=201, form=True)
def create_note(call: Call) -> Stored:
    return Stored(id="n1", text=call.body.text)


@router.route("GET", "/notes/{note_id}", access=Access.PUBLIC)
def read_note(call: Call) -> dict[str, str]:
    return {"id": call.params["note_id"]}


@router.route("DELETE", "/notes/{note_id}", access=Access.PUBLIC)
def delete_note(call: Call) -> Response:
    raise Conflict("the note is in use")


@router.route("GET", "/private", summary="Mine only.")
def read_private(call: Call) -> dict[str, str]:
    return {"uid": call.user.uid}


@router.route("GET", "/bug", access=Access.PUBLIC)
def bug(call: Call) -> None:
    raise RuntimeError("a bug")


@router.route("GET", "/down", access=Access.PUBLIC)
def down(call: Call) -> None:
    from google.api_core import exceptions

    raise exceptions.ServiceUnavailable("Firestore is down")


def _call(method: str, path: str, **options: Any) -> Response:
    return router(Request(EnvironBuilder(method=method, path=path, **options).get_environ()))


def test_a_docstring_gives_the_summary_and_the_description():
    route = router.routes[0]
    assert (route.summary, route.description) == ("The notes.", "Paged.")
    assert router.routes[4].summary == "Mine only."


def test_path_parameters_are_matched_with_or_without_a_trailing_slash():
    for path in ("/notes/n7", "/notes/n7/"):
        reply = _call("GET", path)
        assert reply.status_code == 200 and reply.json == {"id": "n7"}, path


def test_head_is_answered_as_get():
    assert _call("HEAD", "/notes/n7").status_code == 200


def test_an_unknown_path_is_a_json_404():
    reply = _call("GET", "/nowhere")
    assert reply.status_code == 404
    assert reply.json == {"detail": "no route for /nowhere"}


def test_a_method_the_path_does_not_take_is_405_naming_those_it_does():
    reply = _call("PUT", "/notes/n7")
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "DELETE, GET"
    assert reply.json == {"detail": "PUT is not allowed here"}


def test_a_bad_query_is_422_naming_the_parameter_with_every_error_listed():
    reply = _call("GET", "/notes", query_string={"limit": "0", "extra": "1"})
    assert reply.status_code == 422
    body = reply.json
    assert body["detail"].startswith("query.limit: ") and body["detail"].endswith("(and 1 more)")
    assert [error["loc"] for error in body["errors"]] == [["query", "limit"], ["query", "extra"]]
    assert _call("GET", "/notes", query_string={"limit": "5"}).json == {"limit": 5}


def test_a_json_body_is_validated_strictly():
    reply = _call("POST", "/notes", json={"text": "hi", "count": "5"})
    assert reply.status_code == 422 and reply.json["detail"].startswith("body.count: ")
    created = _call("POST", "/notes", json={"text": "hi", "count": 5})
    assert created.status_code == 201 and created.json == {"id": "n1", "text": "hi"}


def test_a_form_route_takes_a_form_and_names_what_it_expected_otherwise():
    created = _call("POST", "/notes", data={"text": "hi"})
    assert created.status_code == 201 and created.json == {"id": "n1", "text": "hi"}
    reply = _call("POST", "/notes", data=b"text", content_type="text/plain")
    assert reply.status_code == 422
    assert reply.json == {"detail": "body: expected JSON or a form"}


def test_a_body_over_the_limit_is_413():
    reply = _call("POST", "/notes", json={"text": "x" * MAX_BODY_BYTES})
    assert reply.status_code == 413
    assert reply.json == {"detail": f"the body is larger than {MAX_BODY_BYTES} bytes"}


def test_an_api_error_is_its_status_and_detail():
    reply = _call("DELETE", "/notes/n7")
    assert reply.status_code == 409 and reply.json == {"detail": "the note is in use"}


def test_a_route_that_needs_a_user_refuses_a_request_without_a_token():
    reply = _call("GET", "/private")
    assert reply.status_code == 401
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.json["detail"].startswith("missing credentials")


def test_a_bug_is_a_logged_500_that_says_nothing_more(caplog):
    with caplog.at_level(logging.ERROR):
        reply = _call("GET", "/bug")
    assert reply.status_code == 500 and reply.json == {"detail": "internal error"}
    assert "unhandled error on GET /bug" in caplog.text


def test_a_backend_that_is_down_is_a_503_to_retry():
    reply = _call("GET", "/down")
    assert reply.status_code == 503
    assert reply.json == {"detail": "a backend service is unavailable; retry"}
