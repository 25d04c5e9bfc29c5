from __future__ import annotations

import uuid

import pytest
from google.cloud.firestore import FieldFilter

from shared.resources.waitlist import waitlist_id


def _address() -> str:
    return f"Someone.{uuid.uuid4().hex[:10]}@Example.com"


@pytest.mark.parametrize("path", ["/waitlist", "/email"])
def test_a_good_address_is_recorded_once_as_json_or_form(api, firestore, path):
    address = _address()
    first = api.post(path, json={"email": address})
    again = api.post(path, data={"email": address})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"status": "ok"}
    stored = firestore.collection("waitlist").document(waitlist_id(address)).get()
    assert stored.get("email") == address.lower()
    assert stored.get("source") == path.strip("/")
    matching = (
        firestore.collection("waitlist")
        .where(filter=FieldFilter("email", "==", address.lower()))
        .get()
    )
    assert len(matching) == 1


def test_a_repeat_keeps_the_first_sign_up(api, firestore):
    address = _address()
    api.post("/waitlist", json={"email": address})
    first = firestore.collection("waitlist").document(waitlist_id(address)).get()
    assert api.post("/email", json={"email": address.upper()}).status_code == 200
    again = firestore.collection("waitlist").document(waitlist_id(address)).get()
    assert again.get("created_at") == first.get("created_at")
    assert again.get("source") == "waitlist"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"email": "two@@example.com"}, "email"),
        ({"email": ""}, "email"),
        ({"email": 42}, "email"),
        ({}, "email"),
        ({"email": "a@example.com", "extra": 1}, "extra"),
        ({"email": f"{'a' * 250}@example.com"}, "email"),
    ],
)
def test_a_bad_or_missing_address_is_422_naming_the_field(gateway, body, field):
    reply = gateway.post("/waitlist", json=body)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]


def test_a_missing_form_field_is_422(gateway):
    reply = gateway.post("/waitlist", data={"mail": "a@example.com"})
    assert reply.status_code == 422
    assert "email" in reply.json()["detail"]


def test_a_body_that_is_not_json_is_422(gateway):
    reply = gateway.post("/waitlist", content=b"email=", headers={"Content-Type": "text/plain"})
    assert reply.status_code == 422
    assert reply.json()["detail"].startswith("body")


@pytest.mark.parametrize("form", [False, True])
def test_an_oversized_body_is_413_and_stores_nothing(api, firestore, form):
    address = f"{'a' * (1024 * 1024)}@example.com"
    reply = (
        api.post("/waitlist", data={"email": address})
        if form
        else api.post("/waitlist", json={"email": address})
    )
    assert reply.status_code == 413
    assert "detail" in reply.json()
    assert not firestore.collection("waitlist").document(waitlist_id(address)).get().exists


def test_get_on_a_post_route_is_405_with_allow(gateway):
    reply = gateway.get("/waitlist")
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "POST"
    assert "detail" in reply.json()


def test_a_multipart_field_too_large_for_memory_is_413(gateway):
    reply = gateway.post("/waitlist", files={"email": (None, "a" * 600_000 + "@example.com")})
    assert reply.status_code == 413
    assert "detail" in reply.json()
