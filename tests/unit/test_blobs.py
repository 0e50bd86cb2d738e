"""Blob stores: one suite run against every store, plus the file store's confinement."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htcgrid.backends.blobs import (
    BlobStore,
    FileBlobStore,
    MemoryBlobStore,
    blob_key,
    is_task_input,
    new_blob_key,
    split_blob_key,
)
from htcgrid.core.errors import GridError, InvalidInput, NotFound

MALFORMED_KEYS = [
    "",
    "s1",
    "s1/",
    "s1/.",
    "s1/..",
    "s1/../x",
    "s1/../../x",
    "s1/a/b",
    "s1/a/../../../x",
    "s1//x",
    "../x",
    "../../etc/passwd",
    "./x",
    "/x",
    "/etc/passwd",
    "..",
    "s.1/x",
    "s 1/x",
    "s1\n/x",
    "s1/x\x00y",
]

#: Names that look odd but stay inside their session's directory.
ODD_BUT_SAFE_NAMES = ["..x", "x..", "a..b", "...", ".hidden", "..\\x", "a\\..\\b", "sp ace", "ü"]


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    return FileBlobStore(tmp_path / "blobs")


def test_put_get(store: BlobStore) -> None:
    store.put("s1/a", b"alpha")
    store.put("s1/b", b"")
    assert store.get("s1/a") == b"alpha"
    assert store.get("s1/b") == b""


def test_put_replaces(store: BlobStore) -> None:
    store.put("s1/a", b"old")
    store.put("s1/a", b"new")
    assert store.get("s1/a") == b"new"


def test_put_keeps_a_copy(store: BlobStore) -> None:
    data = bytearray(b"abc")
    store.put("s1/a", data)  # type: ignore[arg-type]  # callers may pass any bytes-like
    data[0] = ord("z")
    assert store.get("s1/a") == b"abc"


def test_large_blob(store: BlobStore) -> None:
    data = bytes(range(256)) * 4096
    store.put("s1/big", data)
    assert store.get("s1/big") == data


@pytest.mark.parametrize("key", ["s1/missing", "nosession/x"])
def test_get_missing_is_not_found(store: BlobStore, key: str) -> None:
    store.put("s1/a", b"alpha")
    with pytest.raises(NotFound, match="no blob") as info:
        store.get(key)
    assert key in str(info.value)
    assert isinstance(info.value, GridError)
    assert isinstance(info.value, KeyError)


def test_delete_session_removes_only_its_blobs(store: BlobStore) -> None:
    store.put("s1/a", b"1")
    store.put("s1/b", b"2")
    store.put("s10/a", b"3")  # shares a prefix with s1, not its blobs
    store.put("s2/a", b"4")
    store.delete_session("s1")
    for key in ["s1/a", "s1/b"]:
        with pytest.raises(NotFound):
            store.get(key)
    assert store.get("s10/a") == b"3"
    assert store.get("s2/a") == b"4"


def test_delete_session_twice_or_unknown_is_fine(store: BlobStore) -> None:
    store.put("s1/a", b"1")
    store.delete_session("s1")
    store.delete_session("s1")
    store.delete_session("never")
    store.put("s1/a", b"again")  # the session can be written to again
    assert store.get("s1/a") == b"again"


@pytest.mark.parametrize("session_id", ["", "..", ".", "s/1", "s1/..", "../s1"])
def test_delete_session_rejects_malformed_ids(store: BlobStore, session_id: str) -> None:
    with pytest.raises(InvalidInput):
        store.delete_session(session_id)


@pytest.mark.parametrize("key", MALFORMED_KEYS, ids=repr)
def test_malformed_keys_are_rejected(store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        store.put(key, b"x")
    with pytest.raises(InvalidInput, match="malformed"):
        store.get(key)


@pytest.mark.parametrize("name", ODD_BUT_SAFE_NAMES, ids=repr)
def test_odd_names_round_trip(store: BlobStore, name: str) -> None:
    key = blob_key("s1", name)
    store.put(key, b"odd")
    assert store.get(key) == b"odd"


@pytest.mark.parametrize("key", MALFORMED_KEYS, ids=repr)
def test_file_store_writes_nothing_for_a_malformed_key(tmp_path: Path, key: str) -> None:
    root = tmp_path / "root"
    store = FileBlobStore(root)
    with pytest.raises(InvalidInput):
        store.put(key, b"x")
    assert [p for p in tmp_path.rglob("*") if p != root] == []


@pytest.mark.parametrize("name", ODD_BUT_SAFE_NAMES, ids=repr)
def test_file_store_keeps_odd_names_in_their_session(tmp_path: Path, name: str) -> None:
    root = tmp_path / "root"
    FileBlobStore(root).put(blob_key("s1", name), b"odd")
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()] == [
        Path("root", "s1", name)
    ]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@settings(database=None, deadline=None, max_examples=200)
@given(key=st.text(alphabet=st.sampled_from("s1./\\\x00\n _-ab"), max_size=12))
def test_no_key_escapes_the_root(scratch: Path, key: str) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as d:
        base = Path(d)
        store = FileBlobStore(base / "root")
        try:
            store.put(key, b"x")
        except InvalidInput:
            assert [p for p in base.rglob("*") if p.is_file()] == []
            return
        session_id, name = split_blob_key(key)
        assert [p.relative_to(base) for p in base.rglob("*") if p.is_file()] == [
            Path("root", session_id, name)
        ]
        assert store.get(key) == b"x"


def test_file_store_survives_reopen(tmp_path: Path) -> None:
    FileBlobStore(tmp_path / "blobs").put("s1/a", b"kept")
    assert FileBlobStore(tmp_path / "blobs").get("s1/a") == b"kept"


def test_file_store_creates_its_root_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "er" / "blobs"
    store = FileBlobStore(root)
    assert root.is_dir()
    store.put("s1/a", b"1")
    store.put("s1/a", b"2")
    assert sorted(p.name for p in (root / "s1").iterdir()) == ["a"]


def test_file_store_delete_session_removes_the_directory(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    store.put("s1/a", b"1")
    store.delete_session("s1")
    assert not (tmp_path / "s1").exists()


# -- keys -------------------------------------------------------------------------------------


def test_blob_key_and_split_round_trip() -> None:
    key = blob_key("s1", "input-abc")
    assert key == "s1/input-abc"
    assert split_blob_key(key) == ("s1", "input-abc")


@pytest.mark.parametrize(
    ("session_id", "name"),
    [("s1", ""), ("s1", "."), ("s1", ".."), ("s1", "a/b"), ("s1", "x\x00"), ("..", "x"), ("", "x")],
    ids=repr,
)
def test_blob_key_rejects(session_id: str, name: str) -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        blob_key(session_id, name)


@pytest.mark.parametrize("kind", ["input", "output", "handler"])
def test_new_blob_key_is_fresh_and_valid(kind: str) -> None:
    keys = {new_blob_key("s1", kind) for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        session_id, name = split_blob_key(key)
        assert session_id == "s1"
        assert name.startswith(f"{kind}-")


def test_task_inputs_are_recognised_by_their_generated_names() -> None:
    assert is_task_input(new_blob_key("s1", "input"))
    assert not is_task_input(new_blob_key("s1", "output"))
    assert not is_task_input(new_blob_key("s1", "handler"))
    assert not is_task_input("s1/input-shared-table")  # a name a user chose stays
    assert not is_task_input("s1/input-" + "A" * 32)


@pytest.mark.parametrize("kind", ["file", "memory"])
def test_discard_removes_blobs_and_ignores_missing_ones(tmp_path: Path, kind: str) -> None:
    store = FileBlobStore(tmp_path) if kind == "file" else MemoryBlobStore()
    store.put("s1/a", b"1")
    store.put("s1/b", b"2")
    store.discard(["s1/a", "s1/missing", "s2/none"])
    with pytest.raises(NotFound):
        store.get("s1/a")
    assert store.get("s1/b") == b"2"
    with pytest.raises(InvalidInput):
        store.discard(["s1/../x"])
