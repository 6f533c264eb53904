"""flows.uri: locations parsed, joined, named and shown, with no disk or network involved."""

from __future__ import annotations

import pytest

from flows import uri


@pytest.mark.parametrize(
    ("base", "parts", "joined", "parent", "name"),
    [
        ("s3://bkt/out", ("a", "b.png"), "s3://bkt/out/a/b.png", "s3://bkt/out/a", "b.png"),
        ("s3://bkt/out/", ("/a.png",), "s3://bkt/out/a.png", "s3://bkt/out", "a.png"),
        ("s3://bkt", ("a.png",), "s3://bkt/a.png", "s3://bkt", "a.png"),
        ("s3://bkt/", ("reports/",), "s3://bkt/reports/", "s3://bkt", "reports"),
        ("/data/out", ("a", "b.png"), "/data/out/a/b.png", "/data/out/a", "b.png"),
        ("/data/out/", ("/etc/x",), "/data/out/etc/x", "/data/out/etc", "x"),
        ("file:///data", ("a.png",), "/data/a.png", "/data", "a.png"),
        ("rel", ("a.png",), "rel/a.png", "rel", "a.png"),
    ],
)
def test_join_parent_name(base: str, parts: tuple, joined: str, parent: str, name: str) -> None:
    assert uri.join(base, *parts) == joined
    assert uri.parent(joined) == parent
    assert uri.name(joined) == name
    assert uri.is_s3(joined) == base.startswith("s3://")


def test_parent_and_name_of_roots() -> None:
    assert uri.parent("s3://bkt/a") == "s3://bkt" and uri.name("s3://bkt") == "bkt"
    assert uri.parent("/") == "/" and uri.parent("/a/") == "/"


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("a.png", ("a.png", None)),
        ("a.png:0.7", ("a.png", "0.7")),
        (" s3://b/k.png:1e-1 ", ("s3://b/k.png", "1e-1")),
        ("s3://b/k.png", ("s3://b/k.png", None)),
        ("c:/x.png", ("c:/x.png", None)),
        (":0.5", (":0.5", None)),
    ],
)
def test_a_style_cell_item_splits_at_a_trailing_number(item, expected):
    assert uri.split_weight(item) == expected


def test_style_cells_keep_weights_exact_and_round_trip():
    cell = uri.style_cell([("/a.png", 0.1234567), ("s3://b/t.png", None), ("/c.png", 1.0)])
    assert cell == "/a.png:0.1234567;s3://b/t.png;/c.png:1.0"
    assert [uri.split_weight(x) for x in cell.split(";")] == [
        ("/a.png", "0.1234567"),
        ("s3://b/t.png", None),
        ("/c.png", "1.0"),
    ]


def test_locate_names_the_problem():
    assert uri.locate("s3://b/k") == uri.S3Location("b", "k")
    assert uri.locate("file:///tmp/a%20b.png") == "/tmp/a b.png"
    with pytest.raises(uri.UriError, match="names no bucket"):
        uri.locate("s3:///k")
    with pytest.raises(uri.UriError, match="unsupported URI scheme 'gs'"):
        uri.locate("gs://b/k")
    with pytest.raises(uri.UriError, match="must name a local path"):
        uri.locate("file://elsewhere/a.png")
