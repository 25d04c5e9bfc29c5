"""`shared.auth.keys`: the key format of docs/api.md, checked without any database read."""

from __future__ import annotations

import re
import zlib

import pytest

from shared.auth import keys
from shared.auth.keys import KeyKind, MalformedKey


def test_the_checksum_is_the_crc32_of_the_body_in_base62_padded_to_six():
    body = "mnemo_dev_" + "a" * 32
    crc = zlib.crc32(body.encode())
    expected = ""
    while crc:
        crc, digit = divmod(crc, 62)
        expected = keys.ALPHABET[digit] + expected
    assert keys.checksum(body) == expected.rjust(6, "0")
    assert keys.base62(0, 6) == "000000" and keys.base62(61, 2) == "0z"
    assert keys.base62(2**32 - 1, 6) == "4gfFC3"  # the largest CRC32 fits in six


@pytest.mark.parametrize("kind", list(KeyKind))
def test_a_new_key_has_the_documented_shape_and_parses_as_its_kind(kind):
    key = keys.new_key(kind)
    assert re.fullmatch(rf"mnemo_{kind.value}_[0-9A-Za-z]{{32}}_[0-9A-Za-z]{{6}}", key)
    parsed = keys.parse(key)
    assert parsed.kind is kind
    assert parsed.prefix == key[: len(f"mnemo_{kind.value}_") + 4]


def test_keys_are_not_repeated():
    assert len({keys.new_key(KeyKind.dev) for _ in range(1000)}) == 1000


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"),  # the checksum mistyped
        lambda key: key[:15] + ("x" if key[15] != "x" else "y") + key[16:],  # the random part
        lambda key: key.replace("mnemo_dev_", "mnemo_xyz_"),  # an unknown kind
        lambda key: key.replace("mnemo_dev_", "mnemo_mcp_"),  # another kind, same checksum
        lambda key: key.rsplit("_", 1)[0],  # no checksum
        lambda key: key[:20] + key[-7:],  # too short a random part
        lambda key: "Bearer " + key,
        lambda key: "",
    ],
)
def test_a_mistyped_or_invented_key_is_refused_on_its_shape_alone(mangle):
    with pytest.raises(MalformedKey):
        keys.parse(mangle(keys.new_key(KeyKind.dev)))


def test_a_key_is_stored_as_a_keyed_hash_that_depends_on_the_pepper(monkeypatch):
    from shared.core import settings as settings_module
    from shared.core.settings import Settings

    key = keys.new_key(KeyKind.dev)
    stored = keys.stored_hash(key)
    assert key not in stored and len(stored) == 64
    assert keys.stored_hash(key) == stored  # stable: the stored hash finds the key again
    monkeypatch.setattr(settings_module, "_settings", Settings(api_key_pepper="another"))
    assert keys.stored_hash(key) != stored
