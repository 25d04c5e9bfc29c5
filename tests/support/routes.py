"""The route table, as the tests enumerate it: every route of every HTTP function, and the REST
routes of the realtime service."""

from __future__ import annotations

from dataclasses import dataclass

from infra import deployables
from shared.auth.tokens import Access
from shared.web.router import Route


@dataclass(frozen=True)
class TableRow:
    function: str  # the function, or the service (for a streaming route)
    route: Route
    streaming: bool = False  # served by the realtime service, not by a function

    @property
    def url(self) -> str:
        """The route's path with every parameter filled with an id nobody owns."""
        path = self.route.path
        for name in self.route.path_params:
            path = path.replace(f"{{{name}}}", f"no-such-{name}")
        return path

    @property
    def id(self) -> str:
        return f"{self.route.method} {self.route.path}"


def route_table() -> list[TableRow]:
    return [
        TableRow(function, route)
        for function, router in deployables.http_routers().items()
        for route in router.routes
    ] + [
        TableRow(service, route, streaming=True)
        for service, router in deployables.streaming_routers().items()
        for route in router.routes
    ]


def protected_routes() -> list[TableRow]:
    return [row for row in route_table() if row.route.access is not Access.PUBLIC]
