from starlette_realtime.rooms import RoomTable, room_error, sid_room


def test_first_and_last_member_are_reported() -> None:
    table: RoomTable[str] = RoomTable()
    assert table.add(("/c", "r"), "a", "A") is True
    assert table.add(("/c", "r"), "b", "B") is False
    assert table.count(("/c", "r")) == 2
    assert table.discard(("/c", "r"), "a") is False
    assert table.discard(("/c", "r"), "a") is False
    assert table.discard(("/c", "r"), "b") is True
    assert len(table) == 0 and table.members(("/c", "r")) is None


def test_room_names() -> None:
    assert room_error("lobby") is None
    assert room_error("") is not None
    assert room_error("x" * 256) is not None
    assert room_error("#all") is not None
    assert room_error(5) is not None
    assert sid_room("abc") == "#sid:abc"
