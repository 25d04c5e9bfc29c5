"""Every path (generated from the route table, functions and the realtime service alike), through
the gateway in this process: a method the path does not declare is a 405 with the same body
everywhere and an `Allow` naming exactly the path's methods; `OPTIONS` is answered (204, the
same `Allow`); and a literal segment owns its path (`/v1/memories/search` is not a memory)."""

from __future__ import annotations

import pytest

from tests.support.routes import route_table

ROWS = route_table()
PATHS = {row.route.path: row for row in ROWS}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _declared(path: str) -> list[str]:
    return sorted({row.route.method for row in ROWS if row.route.path == path})


@pytest.mark.parametrize("row", PATHS.values(), ids=list(PATHS))
def test_an_undeclared_method_is_405_with_exactly_the_paths_methods(gateway, row):
    declared = _declared(row.route.path)
    method = next(m for m in METHODS if m not in declared)
    reply = gateway.request(method, row.url)
    assert reply.status_code == 405, reply.text
    assert reply.json() == {"detail": f"{method} is not allowed here"}
    assert reply.headers["Allow"] == ", ".join(declared)


@pytest.mark.parametrize("row", PATHS.values(), ids=list(PATHS))
def test_options_is_answered_with_the_same_allow(gateway, row):
    reply = gateway.options(row.url)
    assert reply.status_code == 204
    assert reply.headers["Allow"] == ", ".join(_declared(row.route.path))


def test_a_literal_segment_owns_its_path(gateway):
    assert gateway.options("/v1/memories/search").headers["Allow"] == "GET"
    reply = gateway.put("/v1/memories/search", json={})
    assert reply.status_code == 405
    assert reply.headers["Allow"] == "GET"
    assert gateway.options("/v1/memories/m1").headers["Allow"] == "DELETE, GET, PUT"
