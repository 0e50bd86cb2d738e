"""Session and task ids, and handler references: round trips and malformed input."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcgrid.core.errors import InvalidInput
from htcgrid.core.handlers import (
    HandlerKind,
    HandlerRef,
    command_handler,
    import_handler,
    parse_handler,
    pickle_handler,
)
from htcgrid.core.ids import check_session_id, new_session_id, split_task_id, task_id

# -- ids --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("session_id", "index"),
    [("s1", 0), ("s1", 1), ("abc-DEF_9", 12_345), ("a" * 64, 7), ("-", 0), ("s1", 10**12)],
)
def test_task_id_round_trip(session_id: str, index: int) -> None:
    tid = task_id(session_id, index)
    assert tid == f"{session_id}.{index}"
    assert split_task_id(tid) == (session_id, index)


@settings(database=None, deadline=None)
@given(
    session_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    index=st.integers(min_value=0, max_value=2**63),
)
def test_task_id_round_trip_property(session_id: str, index: int) -> None:
    assert split_task_id(task_id(session_id, index)) == (session_id, index)


def test_new_session_id_is_valid_and_fresh() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100
    for sid in ids:
        assert check_session_id(sid) == sid
        assert split_task_id(task_id(sid, 3)) == (sid, 3)


@pytest.mark.parametrize(
    "tid",
    [
        "",
        ".",
        "s1",
        "s1.",
        ".3",
        "s1.-1",
        "s1.+1",
        "s1.x",
        "s1.3a",
        "s1.3.",
        "s1. 3",
        "s1.3 ",
        "s1.3\n",
        "s1\n.3",
        "s 1.3",
        "s/1.3",
        "s1..3",
        "s.1.2",
        "a" * 65 + ".1",
        "s1.٣",  # a digit, but not an ASCII one
        "s1.²",
        "s1.007",  # not what task_id writes: would name task 7 under a second id
        "s1.00",
    ],
)
def test_split_task_id_rejects_malformed_ids(tid: str) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        split_task_id(tid)


@pytest.mark.parametrize("session_id", ["s1", "S-1_x", "0", "a" * 64, "sabcdef0123456789abcdef01"])
def test_check_session_id_accepts(session_id: str) -> None:
    assert check_session_id(session_id) == session_id


@pytest.mark.parametrize(
    "session_id",
    ["", "a" * 65, "s.1", "s/1", "..", "s 1", "s1\n", "\ns1", "é", "s1\x00", None, 12],
)
def test_check_session_id_rejects(session_id: object) -> None:
    with pytest.raises(InvalidInput, match="malformed session id"):
        check_session_id(session_id)  # type: ignore[arg-type]


# -- handlers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "kind", "target"),
    [
        (import_handler("pkg.mod:fn"), HandlerKind.IMPORT, "pkg.mod:fn"),
        (import_handler("os.path:join"), HandlerKind.IMPORT, "os.path:join"),
        (import_handler("mod:Class.method"), HandlerKind.IMPORT, "mod:Class.method"),
        (import_handler("_private:_fn"), HandlerKind.IMPORT, "_private:_fn"),
        (command_handler(["echo"]), HandlerKind.COMMAND, '["echo"]'),
        (
            command_handler(["sh", "-c", 'echo "$1" | tr a-z A-Z', "ünï côdé"]),
            HandlerKind.COMMAND,
            json.dumps(["sh", "-c", 'echo "$1" | tr a-z A-Z', "ünï côdé"]),
        ),
        (pickle_handler("s1/handler-0123abcd"), HandlerKind.PICKLE, "s1/handler-0123abcd"),
    ],
)
def test_handler_round_trip(ref: str, kind: HandlerKind, target: str) -> None:
    parsed = parse_handler(ref)
    assert parsed == HandlerRef(kind, target)
    assert str(parsed) == ref
    assert parse_handler(str(parsed)) == parsed


@pytest.mark.parametrize(
    "argv", [["echo"], ["python3", "-c", "print(1)"], ["a b", "c:d", '"quoted"', "\\", "ünï"]]
)
def test_command_handler_argv_round_trip(argv: list[str]) -> None:
    assert parse_handler(command_handler(argv)).argv == argv


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "must start with one of import, pickle, command and ':'"),
        ("fn", "must start with one of"),
        ("bogus:x", "must start with one of"),
        ("IMPORT:pkg:fn", "must start with one of"),
        (" import:pkg:fn", "must start with one of"),
        ("import", "nothing after 'import:'"),
        ("import:", "nothing after 'import:'"),
        ("pickle:", "nothing after 'pickle:'"),
        ("command:", "nothing after 'command:'"),
        ("import:pkg.mod", "expected 'package.module:function'"),
        ("import:pkg.mod:", "expected 'package.module:function'"),
        ("import::fn", "expected 'package.module:function'"),
        ("import:1pkg:fn", "expected 'package.module:function'"),
        ("import:pkg mod:fn", "expected 'package.module:function'"),
        ("import:pkg:fn:extra", "expected 'package.module:function'"),
        ("import:pkg:fn\n", "expected 'package.module:function'"),
        ("import:pkg:fn()", "expected 'package.module:function'"),
        ("command:echo hi", "not a JSON list"),
        ("command:[echo]", "not a JSON list"),
        ("command:[]", "not a list of non-empty strings"),
        ("command:{}", "not a list of non-empty strings"),
        ('command:"echo"', "not a list of non-empty strings"),
        ("command:[1]", "not a list of non-empty strings"),
        ('command:["echo", null]', "not a list of non-empty strings"),
        ('command:[""]', "not a list of non-empty strings"),
        ('command:["echo", ""]', "not a list of non-empty strings"),
    ],
)
def test_parse_handler_rejects_malformed_refs(ref: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="malformed") as info:
        parse_handler(ref)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "path", ["", "pkg.mod", "pkg.mod:", ":fn", "pkg/mod:fn", "pkg:fn\n", "1pkg:fn", "a:b:c"]
)
def test_import_handler_rejects(path: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape("expected 'package.module:function'")):
        import_handler(path)


@pytest.mark.parametrize("argv", [[], [""], ["echo", ""], ["echo", 3], [None]])
def test_command_handler_rejects(argv: list[str]) -> None:
    with pytest.raises(InvalidInput, match="non-empty list of non-empty strings"):
        command_handler(argv)


@settings(database=None, deadline=None)
@given(argv=st.lists(st.text(min_size=1), min_size=1, max_size=5))
def test_every_command_handler_parses_back(argv: list[str]) -> None:
    assert parse_handler(command_handler(argv)).argv == argv
