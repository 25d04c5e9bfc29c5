"""The base models every resource builds on (`Model`, `Strict`, `Patch`, `Page`), the error
shape, and the few small shapes that several layers share (a transcript `Segment`, `Moment`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)


class Model(BaseModel):
    """Every model builds its validator on first use, not at import: a function's cold start
    pays only for the models its first request touches."""

    model_config = ConfigDict(defer_build=True)


# A character that stripping keeps (pydantic strips Unicode's White_Space), spelled out: `\s`
# means another set in each regex dialect (ECMA's has U+FEFF, Python's U+001C-U+001F).
_WHITE_SPACE = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{_WHITE_SPACE}]"


def _strict_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A body's schema as it validates: a string that must not be empty once stripped says so."""
    for prop in schema.get("properties", {}).values():
        for option in [prop, *prop.get("anyOf", [])]:
            if option.get("type") == "string" and option.get("minLength", 0) >= 1:
                option.setdefault("pattern", NOT_BLANK)


class Strict(Model):
    """A request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        defer_build=True,
        json_schema_extra=_strict_schema,
    )


def _patch_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """A patch's schema as it validates: at least one property, and `null` only for the
    clearable fields (the others are optional, not nullable)."""
    _strict_schema(schema, model)
    clearable: frozenset[str] = getattr(model, "clearable", frozenset())
    schema["minProperties"] = 1
    for name, prop in schema.get("properties", {}).items():
        if name in clearable:
            continue
        prop.pop("default", None)
        options = [o for o in prop.pop("anyOf", []) if o.get("type") != "null"]
        if len(options) == 1:
            prop.update(options[0])
        elif options:
            prop["anyOf"] = options


class Patch(Strict):
    """A partial update: at least one field, and `null` only where `clearable` says it means
    "remove this value" (elsewhere it is an error, not a silent erase)."""

    model_config = ConfigDict(json_schema_extra=_patch_schema)
    clearable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _something_to_change(self) -> Self:
        if not self.model_fields_set:
            fields = ", ".join(type(self).model_fields)
            raise ValueError(f"send at least one of {fields}")
        cleared = sorted(
            name for name in self.model_fields_set - self.clearable if getattr(self, name) is None
        )
        if cleared:
            raise ValueError(f"{', '.join(cleared)}: null is not a value; leave the field out")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields sent, as Firestore values."""
        return self.model_dump(mode="python", exclude_unset=True)


class Page(Model):
    """`limit` and `offset` of every list (docs/api.md, "Pagination": default 25, at most 100)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    limit: int = Field(default=25, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=10_000)


class Segment(Model):
    """A stretch of transcript, as speech-to-text yields it and a conversation stores it."""

    id: str
    text: str
    speaker: str = "SPEAKER_00"
    speaker_id: int = 0
    is_user: bool = False
    start: float
    end: float


class Error(Model):
    detail: str | list[dict[str, object]]


class Status(Model):
    status: Literal["ok"] = "ok"


class TestInfo(Model):
    status: Literal["ok"] = "ok"
    service: str
    environment: str
    connections: int | None = Field(
        description="Open WebSockets on the realtime service; null if it could not be asked."
    )
    realtime_url: str = Field(description="The origin that serves WebSockets and SSE streams.")


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the date is out of range once in UTC") from None


def _rfc3339_text(value: Any) -> Any:
    # A query parameter is text, and pydantic would read `0.5` as a Unix time: the schema says
    # `format: date-time`, so only that is one.
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("expected an RFC 3339 date-time such as 2026-11-23T09:00:00+01:00")
    return value


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}")

# A moment with an offset (RFC 3339), as the API takes them: kept in UTC; one that is not a
# moment once in UTC (0001-01-01 at +14:00) is a 422, not an error deep in the store.
Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]
# The same in a query string, where a number is not a moment (bodies are strict already).
MomentParameter = Annotated[Moment, BeforeValidator(_rfc3339_text)]
