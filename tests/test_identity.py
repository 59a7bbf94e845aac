"""identity.user_key: one stable string per user object."""

from __future__ import annotations

from dataclasses import dataclass

from starlette_realtime.identity import user_key


@dataclass
class User:
    id: int
    name: str


def test_strings_objects_and_mappings() -> None:
    assert user_key(None) is None
    assert user_key("ada") == "ada"
    assert user_key(User(7, "Ada")) == "7"
    # A mapping (a token's claims) is named by the same keys, so the key does not change
    # when another claim does.
    assert user_key({"id": "ada", "name": "Ada"}) == user_key({"name": "Ada L.", "id": "ada"}) == "ada"
    assert user_key({"username": "bo"}) == "bo"
    assert user_key({"sub": "x"}) == "{'sub': 'x'}"  # no known key: the whole value, as for other objects
