"""API keys (docs/api.md, "Conventions"): `mnemo_<kind>_<random>_<checksum>`.

- `<kind>` is `dev`, `mcp` or `chat`; `<random>` 32 base62 characters from `secrets` (about 190
  bits); `<checksum>` the CRC32 of everything before the last `_`, as an unsigned integer in
  base62 (`0-9A-Za-z`), left-padded with `0` to 6 characters.
- `parse` refuses a mistyped or made-up key on its checksum alone, before any database read;
  secret scanners can do the same.
- A key is stored only as `stored_hash`: an HMAC-SHA256 keyed with `API_KEY_PEPPER`, so a copy
  of the database alone does not let anyone check guesses.
- `prefix` (`mnemo_<kind>_` and the first 4 random characters) is what lists show.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from enum import StrEnum

from shared.core.settings import get_settings

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RANDOM_CHARS = 32
CHECKSUM_CHARS = 6
PREFIX_RANDOM_CHARS = 4
_SHAPE = re.compile(
    rf"^mnemo_(?P<kind>[a-z]+)_(?P<random>[0-9A-Za-z]{{{RANDOM_CHARS},}})"
    rf"_(?P<checksum>[0-9A-Za-z]{{{CHECKSUM_CHARS}}})$"
)


class KeyKind(StrEnum):
    dev = "dev"
    mcp = "mcp"
    chat = "chat"


class MalformedKey(ValueError):
    """Not a Mnemo key: wrong shape, unknown kind, or a checksum that does not match."""


@dataclass(frozen=True)
class ParsedKey:
    kind: KeyKind
    secret: str  # the whole key

    @property
    def prefix(self) -> str:
        return prefix_of(self.secret)


def base62(number: int, width: int) -> str:
    """`number` (>= 0) in base62, left-padded with `0` to `width` characters."""
    digits = ""
    while number:
        number, digit = divmod(number, len(ALPHABET))
        digits = ALPHABET[digit] + digits
    return digits.rjust(width, "0")


def checksum(body: str) -> str:
    """The checksum of `mnemo_<kind>_<random>`."""
    return base62(zlib.crc32(body.encode()) & 0xFFFFFFFF, CHECKSUM_CHARS)


def new_key(kind: KeyKind) -> str:
    body = f"mnemo_{kind.value}_" + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_CHARS))
    return f"{body}_{checksum(body)}"


def parse(key: str) -> ParsedKey:
    """The key's kind, or `MalformedKey` without any database read."""
    found = _SHAPE.match(key)
    if found is None:
        raise MalformedKey("not a Mnemo API key")
    try:
        kind = KeyKind(found["kind"])
    except ValueError:
        raise MalformedKey(f"unknown key kind {found['kind']!r}") from None
    body = key.rsplit("_", 1)[0]
    if not hmac.compare_digest(checksum(body), found["checksum"]):
        raise MalformedKey("the key's checksum does not match: mistyped?")
    return ParsedKey(kind, key)


def prefix_of(key: str) -> str:
    kind, random = key.split("_")[1:3]
    return f"mnemo_{kind}_{random[:PREFIX_RANDOM_CHARS]}"


def stored_hash(key: str) -> str:
    """What is stored of a key: HMAC-SHA256 with `API_KEY_PEPPER`, hex."""
    pepper = get_settings().api_key_pepper.encode()
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()
