"""``?blobs=DIR`` on a store URL: taken off before the driver sees the URL, all else kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from htcgrid.backends.blobs import take_blob_dir
from htcgrid.backends.postgres.address import Address
from htcgrid.core.errors import InvalidInput


def test_the_option_is_taken_off_and_the_rest_kept_byte_for_byte() -> None:
    url = "postgresql://u:p%40ss@h/db?sslmode=require&blobs=/srv/grid%20blobs&options=-c+x%3D1"
    rest, blob_dir = take_blob_dir(url)
    assert rest == "postgresql://u:p%40ss@h/db?sslmode=require&options=-c+x%3D1"
    assert blob_dir == Path("/srv/grid blobs")
    assert take_blob_dir("redis://h:6379/0?blobs=/b") == ("redis://h:6379/0", Path("/b"))


def test_urls_without_the_option_are_unchanged() -> None:
    for url in ("redis://h/0", "redis://h/0?prefix=p", "postgresql://h/db?schema=s&blobsx=1"):
        assert take_blob_dir(url) == (url, None)


@pytest.mark.parametrize("query", ["blobs=", "blobs=rel", "blobs=/a&blobs=/b"])
def test_empty_relative_or_repeated_directories_are_refused(query: str) -> None:
    with pytest.raises(InvalidInput, match="one absolute directory path"):
        take_blob_dir(f"redis://h/0?{query}")


def test_a_postgres_address_keeps_the_whole_url_for_other_processes() -> None:
    url = "postgresql://h/db?schema=grid&blobs=/b"
    rest, _ = take_blob_dir(url)
    address = Address.parse(rest, url)
    assert address.url == url and address.schema == "grid"
    assert "blobs" not in address.conninfo
