from __future__ import annotations

import pytest


def _create(api, user, content="Likes green tea", category=None):
    body = {"content": content} | ({"category": category} if category else {})
    reply = api.post("/v1/memories", json=body, headers=user.bearer)
    assert reply.status_code == 201, reply.text
    return reply.json()


def test_create_read_update_delete(api, user):
    memory = _create(api, user)
    assert memory["category"] == "manual" and memory["manually_added"] is True
    assert memory["conversation_id"] is None
    path = f"/v1/memories/{memory['id']}"
    assert api.get(path, headers=user.bearer).json() == memory

    changed = api.put(path, json={"category": "interesting"}, headers=user.raw)
    assert changed.status_code == 200
    assert changed.json()["category"] == "interesting"
    assert changed.json()["content"] == "Likes green tea"
    assert changed.json()["updated_at"] > memory["updated_at"]

    assert api.delete(path, headers=user.bearer).status_code == 204
    assert api.get(path, headers=user.bearer).status_code == 404
    assert api.delete(path, headers=user.bearer).status_code == 404
    assert api.put(path, json={"content": "again"}, headers=user.bearer).status_code == 404


def test_the_list_filters_by_categories(api, user):
    manual = _create(api, user, "a")
    interesting = _create(api, user, "b", "interesting")
    system = _create(api, user, "c", "system")

    def listed(**params):
        reply = api.get("/v1/memories", params=params, headers=user.bearer)
        assert reply.status_code == 200, reply.text
        return [item["id"] for item in reply.json()]

    assert listed() == [system["id"], interesting["id"], manual["id"]]
    assert listed(categories="manual") == [manual["id"]]
    assert listed(categories="system, manual") == [system["id"], manual["id"]]


def test_sixty_memories_in_pages_of_25_come_once_each_in_order(api, user):
    created = [_create(api, user, f"fact {n}")["id"] for n in range(60)]
    seen = []
    for offset in (0, 25, 50):
        page = api.get("/v1/memories", params={"limit": 25, "offset": offset}, headers=user.bearer)
        seen += [item["id"] for item in page.json()]
    assert seen == list(reversed(created))
    beyond = api.get("/v1/memories", params={"offset": 60}, headers=user.bearer)
    assert beyond.json() == []


def test_someone_elses_memory_is_404_and_untouched(api, auth_emulator):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    memory = _create(api, owner)
    path = f"/v1/memories/{memory['id']}"
    assert api.get(path, headers=other.bearer).status_code == 404
    assert api.put(path, json={"content": "mine now"}, headers=other.bearer).status_code == 404
    assert api.delete(path, headers=other.bearer).status_code == 404
    assert api.get("/v1/memories", headers=other.bearer).json() == []
    assert api.get(path, headers=owner.bearer).json() == memory


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 1001}, "content"),
        ({"content": 5}, "content"),
        ({"content": None}, "content"),
        ({"content": "ok", "category": "gossip"}, "category"),
        ({"content": "ok", "visibility": "public"}, "visibility"),
        ({}, "content"),
        ([], "body"),
    ],
)
def test_a_bad_memory_is_422_naming_the_field_and_nothing_is_stored(api, user, body, field):
    reply = api.post("/v1/memories", json=body, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
    assert api.get("/v1/memories", headers=user.bearer).json() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "content"), ({"content": None}, "content"), ({"category": "x"}, "category")],
)
def test_a_bad_update_is_422_and_changes_nothing(api, user, body, field):
    memory = _create(api, user)
    reply = api.put(f"/v1/memories/{memory['id']}", json=body, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
    assert api.get(f"/v1/memories/{memory['id']}", headers=user.bearer).json() == memory


def test_non_json_and_oversized_bodies(api, user):
    not_json = api.post("/v1/memories", content=b"content=hi", headers=user.bearer)
    assert not_json.status_code == 422 and "body" in not_json.json()["detail"]
    huge = api.post("/v1/memories", json={"content": "x" * (1024 * 1024)}, headers=user.bearer)
    assert huge.status_code == 413
    assert api.get("/v1/memories", headers=user.bearer).json() == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"categories": "manual,gossip"}, "categories"),
    ],
)
def test_bad_list_parameters_are_422(api, user, params, field):
    reply = api.get("/v1/memories", params=params, headers=user.bearer)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]
