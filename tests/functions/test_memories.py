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


def test_a_category_named_many_times_counts_once(api, user):
    """Firestore's `in` takes at most 30 values: 31 of the same is one."""
    api.post("/v1/memories", json={"content": "Likes tea"}, headers=user.bearer)
    params = {"categories": ",".join(["manual"] * 31 + ["interesting"])}
    reply = api.get("/v1/memories", params=params, headers=user.bearer)
    assert reply.status_code == 200, reply.text
    assert [m["content"] for m in reply.json()] == ["Likes tea"]


VERBS = ["grows", "paints", "collects", "repairs", "photographs"]
THINGS = ["tomatoes", "bicycles", "lanterns", "violins", "kites", "clocks", "boats", "maps"]
CITIES = ["Lisbon", "Oslo", "Kyoto", "Quito", "Tunis"]


def _seed_memories(firestore, uid: str, contents: list[str]) -> dict[str, str]:
    """Memories written as the API and post-processing write them (keywords and the
    embedding the OpenAI double gives), in one batch: id by content."""
    from datetime import UTC, datetime, timedelta

    from shared.resources.memories import search_fields
    from tests.support.openai_double import embed

    collection = firestore.collection("users").document(uid).collection("memories")
    batch, ids = firestore.batch(), {}
    start = datetime.now(UTC)
    for index, content in enumerate(contents):
        reference = collection.document()
        when = start + timedelta(milliseconds=index)
        fields = {
            "content": content,
            "category": "interesting",
            "conversation_id": None,
            "manually_added": False,
            "created_at": when,
            "updated_at": when,
        }
        batch.set(reference, {**fields, **search_fields(content, embed(content))})
        ids[content] = reference.id
    batch.commit()
    return ids


def test_a_search_for_the_words_of_one_of_200_memories_finds_it_first(api, user, firestore, openai):
    """Every word of the query is in many memories; only one has them all."""
    contents = [
        f"The user {verb} {thing} in {city}."
        for verb in VERBS
        for thing in THINGS
        for city in CITIES
    ]
    assert len(contents) == 200
    ids = _seed_memories(firestore, user.uid, contents)
    for verb, thing, city in [("repairs", "violins", "Kyoto"), ("grows", "maps", "Lisbon")]:
        reply = api.get(
            "/v1/memories/search", params={"q": f"{thing} {city} {verb}"}, headers=user.bearer
        )
        assert reply.status_code == 200, reply.text
        found = reply.json()
        assert found[0]["id"] == ids[f"The user {verb} {thing} in {city}."]
        assert len(found) == 10  # the default limit
    # The query was embedded through the SDK (hybrid), not only matched by keywords.
    assert any(request.body.get("input") for request in openai.embedding_requests)


def test_search_finds_only_the_callers_memories(api, auth_emulator, firestore, openai):
    owner, other = auth_emulator.sign_up(), auth_emulator.sign_up()
    _seed_memories(firestore, owner.uid, ["The user hides the spare key under the blue pot."])
    reply = api.get("/v1/memories/search", params={"q": "spare key blue pot"}, headers=other.bearer)
    assert reply.status_code == 200 and reply.json() == []


def test_without_a_language_model_search_falls_back_to_keywords(
    stack, user, firestore, monkeypatch
):
    from shared.resources import memories

    ids = _seed_memories(firestore, user.uid, ["The user sails on Lake Geneva.", "Unrelated."])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    found = memories.search(user.uid, memories.MemorySearch(q="sailing lake geneva"))
    assert [memory.id for memory in found] == [ids["The user sails on Lake Geneva."]]


def test_a_memory_created_or_changed_through_the_api_is_embedded(api, user, firestore, openai):
    memory = _create(api, user, content="The user runs a marathon every spring")
    stored = firestore.document(f"users/{user.uid}/memories/{memory['id']}")
    first = stored.get().to_dict()
    assert len(first["embedding"].to_map_value()["value"]) == 1536
    assert "marathon" in first["keywords"]
    api.put(f"/v1/memories/{memory['id']}", json={"content": "The user swims"}, headers=user.bearer)
    second = stored.get().to_dict()
    assert second["keywords"] == ["swim", "user"]
    assert second["embedding"] != first["embedding"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "x", "limit": "0"}, "limit"),
        ({"q": "x", "limit": "51"}, "limit"),
    ],
)
def test_bad_search_parameters_are_422(api, user, params, field):
    reply = api.get("/v1/memories/search", params=params, headers=user.bearer)
    assert reply.status_code == 422 and field in reply.json()["detail"]
