from __future__ import annotations

import pytest


def _create(api, user, **body):
    reply = api.post(
        "/v1/action-items", json={"description": "Send the slides", **body}, headers=user.bearer
    )
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_completing_sets_completed_at_once_and_reopening_clears_it(api, user):
    item = _create(api, user, due_at="2026-12-01T09:00:00+01:00")
    assert item["completed"] is False and item["completed_at"] is None
    assert item["due_at"] == "2026-12-01T08:00:00Z"
    path = f"/v1/action-items/{item['id']}"

    done = api.put(path, json={"completed": True}, headers=user.bearer).json()
    assert done["completed"] is True and done["completed_at"]
    again = api.put(
        path, json={"completed": True, "description": "Send slides"}, headers=user.bearer
    )
    assert again.json()["completed_at"] == done["completed_at"]
    assert again.json()["description"] == "Send slides"

    reopened = api.put(path, json={"completed": False}, headers=user.bearer).json()
    assert reopened["completed"] is False and reopened["completed_at"] is None
    undated = api.put(path, json={"due_at": None}, headers=user.bearer).json()
    assert undated["due_at"] is None and undated["description"] == "Send slides"


def test_the_list_filters_by_status(api, user):
    pending = _create(api, user)
    completed = _create(api, user)
    api.put(f"/v1/action-items/{completed['id']}", json={"completed": True}, headers=user.bearer)

    def listed(**params):
        reply = api.get("/v1/action-items", params=params, headers=user.bearer)
        assert reply.status_code == 200, reply.text
        return [item["id"] for item in reply.json()]

    assert listed() == [completed["id"], pending["id"]]
    assert listed(status="pending") == [pending["id"]]
    assert listed(status="completed") == [completed["id"]]
    assert (
        api.get("/v1/action-items", params={"status": "done"}, headers=user.bearer).status_code
        == 422
    )


def test_someone_elses_action_item_is_404_and_untouched(api, auth_emulator):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    item = _create(api, owner)
    path = f"/v1/action-items/{item['id']}"
    assert api.get(path, headers=other.bearer).status_code == 404
    assert api.put(path, json={"completed": True}, headers=other.bearer).status_code == 404
    assert api.delete(path, headers=other.bearer).status_code == 404
    assert api.get(path, headers=owner.bearer).json() == item
    assert api.delete(path, headers=owner.bearer).status_code == 204
    assert api.get(path, headers=owner.bearer).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": ""}, "description"),
        ({"description": "x" * 501}, "description"),
        ({"description": "ok", "due_at": "tomorrow"}, "due_at"),
        ({"description": "ok", "due_at": "2026-12-01T09:00:00"}, "due_at"),
        ({"description": "ok", "due_at": "9999-12-31T23:59:59-05:00"}, "due_at"),
        ({"description": "ok", "completed": True}, "completed"),
        ({"description": ["a"]}, "description"),
    ],
)
def test_a_bad_action_item_is_422_naming_the_field(api, user, body, field):
    reply = api.post("/v1/action-items", json=body, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
    assert api.get("/v1/action-items", headers=user.bearer).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"completed": "yes"}, "completed"),
        ({"completed": None}, "completed"),
        ({}, "description"),
        ({"due_at": "0001-01-01T00:00:00+01:00"}, "due_at"),
    ],
)
def test_a_bad_update_is_422_and_changes_nothing(api, user, body, field):
    item = _create(api, user)
    reply = api.put(f"/v1/action-items/{item['id']}", json=body, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
    assert api.get(f"/v1/action-items/{item['id']}", headers=user.bearer).json() == item
