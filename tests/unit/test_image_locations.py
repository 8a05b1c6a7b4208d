"""The rules of image locations that need no cloud: Glance's validation data, pointer
positions, the 2.17 request body, and the http store's reads of a range."""

from __future__ import annotations

import httpx
import pytest

from cumulo.common.faults import BadRequest, Conflict
from cumulo.image.http_store import HttpStore, LocationUnreadable
from cumulo.image.locations import _position, check_add_body, check_location, validation_values
from cumulo.image.models import Image

SHA512 = "ab" * 64


def _image(status: str = "queued", **values) -> Image:
    return Image(id="i", status=status, **values)


def test_validation_data_sets_a_queued_images_hashes():
    loc = {"validation_data": {"checksum": "1" * 32, "os_hash_algo": "sha512",
                               "os_hash_value": SHA512}}  # fmt: skip
    assert validation_values(_image(), [loc]) == loc["validation_data"]


@pytest.mark.parametrize(
    ("image", "data", "says"),
    [
        (_image("active", checksum="2" * 32), {"checksum": "1" * 32}, "already set"),
        (_image("active"), {"os_hash_algo": "sha512", "os_hash_value": SHA512}, "queued"),
        (_image(), {"os_hash_algo": "sha256", "os_hash_value": "ab" * 32}, "must be sha512"),
        (_image(), {"os_hash_algo": "sha512", "os_hash_value": "ab" * 32}, "correct size"),
        (_image(), {"os_hash_algo": "sha512", "os_hash_value": "zz" * 64}, "hexadecimal"),
        (_image(), {"checksum": "x" * 32, "os_hash_algo": "sha512", "os_hash_value": SHA512},
         "hexadecimal"),
    ],
)  # fmt: skip
def test_validation_data_that_disagrees_is_a_conflict(image: Image, data: dict, says: str):
    with pytest.raises(Conflict, match=says):
        validation_values(image, [{"validation_data": data}])


def test_two_locations_with_different_validation_data_conflict():
    a = {"validation_data": {"os_hash_algo": "sha512", "os_hash_value": SHA512}}
    b = {"validation_data": {"os_hash_algo": "sha512", "os_hash_value": "cd" * 64}}
    with pytest.raises(Conflict, match="Conflicting values for os_hash_value"):
        validation_values(_image(), [a, b])


def test_values_already_set_may_be_given_again_on_an_active_image():
    image = _image("active", os_hash_algo="sha512", os_hash_value=SHA512)
    data = {"os_hash_algo": "sha512", "os_hash_value": SHA512}
    assert validation_values(image, [{"validation_data": data}]) == {}


@pytest.mark.parametrize(
    ("token", "count", "append", "expected"),
    [("-", 2, True, 2), ("0", 2, True, 0), ("9", 2, True, 2), ("x", 2, True, None),
     ("-", 2, False, 1), ("1", 2, False, 1), ("2", 2, False, None), ("-1", 2, False, None)],
)  # fmt: skip
def test_location_positions_as_glance_reads_them(token, count, append, expected):
    assert _position(token, count, append=append) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"url": "http://x/y"},
        {"metadata": {}},
        {"url": "http://x/" + "y" * 300, "metadata": {}},
        {"url": "http://x/y", "metadata": []},
        {"url": "http://x/y", "metadata": {}, "validation_data": {"os_hash_value": SHA512}},
        {"url": "http://x/y", "metadata": {}, "validation_data": {"size": 1}},
    ],
)
def test_locations_not_matching_the_image_schema_are_bad_requests(value: dict):
    with pytest.raises(BadRequest, match="does not match schema"):
        check_location(value)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": 7},
        {"url": "http://x/y", "validation_data": None},
        {"url": "http://x/y", "validation_data": {"os_hash_value": SHA512}},
        {"url": "http://x/y", "validation_data": {"os_hash_algo": "sha512"}},
        {"url": "u", "validation_data": {"os_hash_algo": "sha123", "os_hash_value": SHA512}},
        {"url": "u", "validation_data": {"os_hash_algo": "sha256", "os_hash_value": SHA512}},
        {"url": "http://x/y", "validation_data": {"checksum": "1" * 32}},
    ],
)  # fmt: skip
def test_bad_add_location_bodies_are_bad_requests(body: dict):
    with pytest.raises(BadRequest):
        check_add_body(body)


def test_add_location_body_with_its_hash():
    data = {"os_hash_algo": "md5", "os_hash_value": "ab" * 16}
    assert check_add_body({"url": "http://x/y", "validation_data": data}) == ("http://x/y", data)


DATA = bytes(range(256)) * 1000


def _store(handler) -> HttpStore:
    store = HttpStore("web", "web")
    store.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return store


async def _read(store: HttpStore, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([c async for c in store.read("http://web/disk", start, end)])


async def test_a_server_that_ignores_range_is_cut_to_the_range():
    store = _store(lambda request: httpx.Response(200, content=DATA))
    assert await _read(store, 1000, 5000) == DATA[1000:5000]
    assert await _read(store, 250_000) == DATA[250_000:]
    assert await _read(store, 7, 7) == b""


async def test_a_server_that_answers_the_range_is_streamed_through():
    def ranged(request: httpx.Request) -> httpx.Response:
        first, last = request.headers["range"].removeprefix("bytes=").split("-")
        return httpx.Response(206, content=DATA[int(first) : int(last) + 1])

    assert await _read(_store(ranged), 10, 20) == DATA[10:20]


async def test_sizes_come_from_head_and_errors_are_unreadable():
    store = _store(lambda r: httpx.Response(200, headers={"Content-Length": "42"}))
    assert await store.size("http://web/disk") == 42
    missing = _store(lambda request: httpx.Response(404))
    with pytest.raises(LocationUnreadable):
        await missing.size("http://web/disk")
    with pytest.raises(LocationUnreadable):
        await _read(missing)
