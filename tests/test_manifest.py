"""Manifest parsing and validation: every format, every row error, failed.csv round trips."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flows.manifest import (
    Manifest,
    ManifestError,
    error_row,
    failed_rows_csv,
    load_manifest,
    pair_row,
    parse_manifest,
)
from flows.model import StyleRef
from flows.uri import resolve, safe_output_name
from stylecore.options import StyleOptions

RUN = StyleOptions(iterations=100, size=256)  # the run's defaults, as the CLI would pass them


def write(path: Path, text: str) -> str:
    """Write a manifest (or an empty image stand-in) and return its path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(tmp_path: Path, name: str, text: str) -> Manifest:
    return load_manifest(write(tmp_path / name, text), RUN)


def messages(manifest: Manifest) -> list[str]:
    return [e.message for e in manifest.errors]


def only_error(manifest: Manifest) -> tuple[str, str | None]:
    assert len(manifest.errors) == 1, messages(manifest)
    return manifest.errors[0].message, manifest.errors[0].field


# --- formats ---------------------------------------------------------------------------------


def test_csv_rows_resolve_against_the_manifest_directory(tmp_path: Path) -> None:
    text = "content,style,output,iterations\nphotos/a.jpg,starry.jpg,out/a,50\nb.jpg,/abs/s.jpg,,\n"
    m = load(tmp_path / "in", "m.csv", text)
    assert [p.row for p in m.pairs] == [2, 3] and not m.errors
    a, b = m.pairs
    assert a.content == str(tmp_path / "in" / "photos" / "a.jpg")
    assert a.styles == (StyleRef(str(tmp_path / "in" / "starry.jpg"), None),)
    assert (a.output, b.output) == ("out/a.png", None)
    assert (a.options.iterations, b.options.iterations) == (50, 100)  # row ← run defaults
    assert a.options.size == 256 and a.overrides == {"iterations": "50"} and b.overrides == {}
    assert a.raw == {
        "content": "photos/a.jpg",
        "style": "starry.jpg",
        "output": "out/a",
        "iterations": "50",
    }
    assert b.styles[0].uri == "/abs/s.jpg"


def test_csv_row_numbers_are_line_numbers_across_quoted_newlines_and_blank_lines(
    tmp_path: Path,
) -> None:
    text = 'content,style\na.jpg,"s.jpg;\nt.jpg"\n\n,\nb.jpg,s.jpg\n'
    m = load(tmp_path, "m.csv", text)
    assert [p.row for p in m.pairs] == [2, 6]
    assert [s.uri for s in m.pairs[0].styles] == [str(tmp_path / "s.jpg"), str(tmp_path / "t.jpg")]


@pytest.mark.parametrize(
    ("name", "sep"), [("m.tsv", "\t"), ("m.csv", ";"), ("m.csv", "|"), ("m.csv", "\t")]
)
def test_other_delimiters(tmp_path: Path, name: str, sep: str) -> None:
    rows = [
        ["content", "style", "style_weight"],
        ["a.jpg", '"s.jpg;t.jpg"', "7"],
        ["b.jpg", "s.jpg", ""],
    ]
    m = load(tmp_path, name, "\n".join(sep.join(r) for r in rows) + "\n")
    assert not m.errors, messages(m)
    assert [len(p.styles) for p in m.pairs] == [2, 1]
    assert [p.options.style_weight for p in m.pairs] == [7.0, 500.0]


def test_jsonl_rows_are_line_numbers_and_take_style_lists(tmp_path: Path) -> None:
    lines = [
        {"content": "a.jpg", "style": "s.jpg", "preserve_colors": True},
        {},  # stands for a blank line below
        {"content": "b.jpg", "styles": ["s.jpg:2", {"path": "s3://b/t.jpg", "weight": 1}]},
        {"content": "c.jpg", "style": {"path": "u.jpg"}, "style_layers": ["relu1_1", "relu2_1"]},
    ]
    text = "\n".join("" if not line else json.dumps(line) for line in lines)
    m = load(tmp_path, "m.jsonl", text)
    assert [p.row for p in m.pairs] == [1, 3, 4] and not m.errors
    a, b, c = m.pairs
    assert a.options.preserve_colors is True
    assert b.styles == (StyleRef(str(tmp_path / "s.jpg"), 2.0), StyleRef("s3://b/t.jpg", 1.0))
    assert b.options.style_blend == (2.0, 1.0)
    assert c.styles == (StyleRef(str(tmp_path / "u.jpg"), None),)
    assert c.options.style_layers == ("relu1_1", "relu2_1")


def test_ndjson_extension_and_explicit_format(tmp_path: Path) -> None:
    row = json.dumps({"content": "a.jpg", "style": "s.jpg"})
    assert len(load(tmp_path, "m.ndjson", row).pairs) == 1
    m = parse_manifest(row, str(tmp_path / "rows.txt"), RUN, fmt="jsonl")
    assert m.pairs[0].content == str(tmp_path / "a.jpg")


def test_yaml_list_of_rows(tmp_path: Path) -> None:
    text = (
        "- {content: a.jpg, style: s.jpg, size: 128}\n- content: b.jpg\n  style: [s.jpg, t.jpg]\n"
    )
    m = load(tmp_path, "m.yml", text)
    assert [p.row for p in m.pairs] == [1, 2] and not m.errors
    assert m.pairs[0].options.size == 128 and len(m.pairs[1].styles) == 2


def test_yaml_defaults_pairs_and_cross_product_over_real_files(tmp_path: Path) -> None:
    for name in [
        "photos/a.jpg",
        "photos/b.jpg",
        "photos/notes.txt",
        "styles/s1.jpg",
        "styles/s2.png",
    ]:
        write(tmp_path / name, "")
    text = """
defaults: {iterations: 200, style_weight: 50}
pairs:
  - {content: photos/a.jpg, style: [styles/s1.jpg:0.7, styles/s2.png:0.3], output: a.png}
  - {content: photos/b.jpg, style: styles/s1.jpg, iterations: 20}
cross:
  - contents: [photos/*.jpg]
    styles: [styles/*, styles/s1.jpg]
    tv_weight: 10
"""
    m = load(tmp_path, "m.yaml", text)
    assert not m.errors, messages(m)
    assert [p.row for p in m.pairs] == [1, 2, 3, 4, 5, 6]
    assert [p.options.iterations for p in m.pairs] == [200, 20, 200, 200, 200, 200]
    assert all(p.options.style_weight == 50 for p in m.pairs)
    assert [p.options.tv_weight for p in m.pairs] == [1.0, 1.0, 10.0, 10.0, 10.0, 10.0]
    cross = [(Path(p.content).name, Path(p.styles[0].uri).name) for p in m.pairs[2:]]
    assert cross == [
        ("a.jpg", "s1.jpg"),
        ("a.jpg", "s2.png"),
        ("b.jpg", "s1.jpg"),
        ("b.jpg", "s2.png"),
    ]
    assert m.pairs[0].options.style_blend == (0.7, 0.3)
    assert m.pairs[1].overrides == {"iterations": 20, "style_weight": 50}
    assert m.pairs[2].raw["content"] == str(tmp_path / "photos" / "a.jpg")


def test_yaml_top_level_contents_and_styles(tmp_path: Path) -> None:
    write(tmp_path / "c" / "x.jpg", "")
    m = load(tmp_path, "m.yaml", "contents: c/*.jpg\nstyles: [s.jpg, t.jpg]\n")
    assert [(p.row, Path(p.styles[0].uri).name) for p in m.pairs] == [(1, "s.jpg"), (2, "t.jpg")]


def test_yaml_glob_matching_nothing_is_a_row_error_naming_the_pattern(tmp_path: Path) -> None:
    write(tmp_path / "s.jpg", "")
    text = "pairs: [{content: a.jpg, style: s.jpg}]\ncross: [{contents: nope/*.jpg, styles: s.jpg}]"
    m = load(tmp_path, "m.yaml", text)
    assert only_error(m) == ("row 2: contents: 'nope/*.jpg' matches nothing", "contents")
    assert [p.row for p in m.pairs] == [1]


def test_glob_is_pluggable_and_s3_patterns_resolve_against_the_s3_prefix() -> None:
    asked = []

    def s3_glob(pattern: str) -> list[str]:
        asked.append(pattern)
        return ["s3://bucket/in/st/a.jpg", "s3://bucket/in/st/b.jpg"]

    m = parse_manifest(
        "contents: [c.jpg]\nstyles: [st/*.jpg]\n", "s3://bucket/in/m.yaml", RUN, glob=s3_glob
    )
    assert asked == ["s3://bucket/in/st/*.jpg"]
    assert [p.content for p in m.pairs] == ["s3://bucket/in/c.jpg"] * 2
    assert [p.styles[0].uri for p in m.pairs] == [
        "s3://bucket/in/st/a.jpg",
        "s3://bucket/in/st/b.jpg",
    ]


def test_relative_paths_in_an_s3_manifest_resolve_against_its_prefix() -> None:
    text = "content,style\na.jpg,../shared/s.jpg:1;s3://other/t.jpg:1\n"
    m = parse_manifest(text, "s3://bucket/in/m.csv", RUN)
    assert m.base == "s3://bucket/in/"
    assert m.pairs[0].content == "s3://bucket/in/a.jpg"
    assert [s.uri for s in m.pairs[0].styles] == ["s3://bucket/shared/s.jpg", "s3://other/t.jpg"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.csv", "content,style\na.jpg,s.jpg\n"),
        ("m.jsonl", '{"content": "a.jpg", "style": "s.jpg"}\n'),
        ("m.yaml", "- {content: a.jpg, style: s.jpg}\n"),
    ],
)
def test_utf8_bom_is_stripped(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.encode())
    m = load_manifest(str(tmp_path / name), RUN)
    assert not m.errors and m.pairs[0].content == str(tmp_path / "a.jpg")


# --- blend weights ---------------------------------------------------------------------------


def test_csv_blend_weights_split_on_the_last_colon_only_before_a_number(tmp_path: Path) -> None:
    text = "content,style\na.jpg,s3://b/s.jpg:0.7;t.jpg:3e-1\nb.jpg,s3://b/s.jpg;t:x.jpg\n"
    weighted, plain = load(tmp_path, "m.csv", text).pairs
    assert weighted.styles == (
        StyleRef("s3://b/s.jpg", 0.7),
        StyleRef(str(tmp_path / "t.jpg"), 0.3),
    )
    assert weighted.options.style_blend == (0.7, 0.3)
    assert plain.styles == (
        StyleRef("s3://b/s.jpg", None),
        StyleRef(str(tmp_path / "t:x.jpg"), None),
    )
    assert plain.options.style_blend == ()


@pytest.mark.parametrize(
    ("style", "extra", "message", "field"),
    [
        (
            "s.jpg:0.7;t.jpg",
            "",
            "row 2: style: give a blend weight for every style or for none",
            "style",
        ),
        ("s.jpg:-1", "", "row 2: style: blend weight must be ≥ 0, got -1.0", "style"),
        ("s.jpg:0;t.jpg:0", "", "row 2: style: the blend weights sum to zero", "style"),
        (
            "s.jpg:1;t.jpg:1",
            "1,1",
            "row 2: style_blend: blend weights are already given in 'style'",
            "style_blend",
        ),
        ("s.jpg", "1,1", "row 2: style_blend: 2 weights for 1 style", "style_blend"),
    ],
)
def test_blend_weight_errors(
    tmp_path: Path, style: str, extra: str, message: str, field: str
) -> None:
    m = load(tmp_path, "m.csv", f'content,style,style_blend\na.jpg,{style},"{extra}"\n')
    assert only_error(m) == (message, field)


@pytest.mark.parametrize(
    ("style", "message"),
    [
        (
            [{"path": "s.jpg", "weight": "heavy"}],
            "row 1: style: blend weight must be a number, got 'heavy'",
        ),
        (
            [{"path": "s.jpg", "weight": True}],
            "row 1: style: blend weight must be a number, got true/false",
        ),
        ([{"file": "s.jpg"}], "row 1: style: unknown key 'file'"),
        ([{"weight": 1}], "row 1: style: each {path, weight} needs a path"),
        ([3], "row 1: style: expected a path or {path, weight}, got a int"),
        (7, "row 1: style: expected a path or a list of paths, got a int"),
        ([], "row 1: style: no style given"),
    ],
)
def test_json_style_value_errors(tmp_path: Path, style: object, message: str) -> None:
    m = load(tmp_path, "m.jsonl", json.dumps({"content": "a.jpg", "style": style}))
    assert only_error(m) == (message, "style")


# --- resolve ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "base", "expected"),
    [
        ("a.jpg", "/m", "/m/a.jpg"),
        ("../x/./a.jpg", "/m/in", "/m/x/a.jpg"),
        ("/abs/a.jpg", "/m", "/abs/a.jpg"),
        ("s3://b/k/a.jpg", "/m", "s3://b/k/a.jpg"),
        ("S3://b/k.jpg", "/m", "s3://b/k.jpg"),
        ("a.jpg", "s3://bucket/in/", "s3://bucket/in/a.jpg"),
        ("sub/../b.jpg", "s3://bucket/in", "s3://bucket/in/b.jpg"),
        ("../a.jpg", "s3://bucket/in/", "s3://bucket/a.jpg"),
        ("/local.jpg", "s3://bucket/in/", "/local.jpg"),
        ("file:///tmp/a%20b.jpg", "/m", "/tmp/a b.jpg"),
        ("file://localhost/tmp/a.jpg", "/m", "/tmp/a.jpg"),
    ],
)
def test_resolve(ref: str, base: str, expected: str) -> None:
    assert resolve(ref, base) == expected


@pytest.mark.parametrize(
    ("ref", "cause"),
    [
        ("gs://bucket/a.jpg", "unsupported URI scheme 'gs'"),
        ("https://example.com/a.jpg", "unsupported URI scheme 'https'"),
        ("file://server/a.jpg", "names another host"),
        ("s3://bucket", "needs a bucket and a key"),
        ("s3:///key.jpg", "needs a bucket and a key"),
        ("a\x00.jpg", "contains a control character"),
    ],
)
def test_resolve_refuses(ref: str, cause: str) -> None:
    with pytest.raises(ValueError, match=cause):
        resolve(ref, "/m")


@pytest.mark.parametrize(
    ("row", "message", "field"),
    [
        (
            "gs://b/a.jpg,s.jpg",
            "row 2: content: unsupported URI scheme 'gs' in 'gs://b/a.jpg'",
            "content",
        ),
        (
            "a.jpg,s.jpg;http://x/t.jpg",
            "row 2: style: unsupported URI scheme 'http' in 'http://x/t.jpg'",
            "style",
        ),
    ],
)
def test_unsupported_schemes_are_row_errors(
    tmp_path: Path, row: str, message: str, field: str
) -> None:
    got, got_field = only_error(load(tmp_path, "m.csv", f"content,style\n{row}\n"))
    assert got.startswith(message) and got_field == field


# --- row errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message", "field"),
    [
        ("a.jpg,s.jpg,\n,s.jpg,", "row 3: content: missing", "content"),
        ("a.jpg,s.jpg,\n  ,s.jpg,", "row 3: content: missing", "content"),
        ("a.jpg,s.jpg,\nb.jpg, ,", "row 3: style: no style given", "style"),
        ("a.jpg,s.jpg,\nb.jpg,;,", "row 3: style: no style given", "style"),
        ("a.jpg,s.jpg,many", "row 2: iterations: cannot read 'many' as an integer", "iterations"),
        ("a.jpg,s.jpg,2.5", "row 2: iterations: cannot read '2.5' as an integer", "iterations"),
        ("a.jpg,s.jpg,0", "row 2: iterations: must be 1…100000, got 0", "iterations"),
        ("a.jpg,s.jpg,1,extra", "row 2: 4 cells but the header has 3 columns", None),
        ("a.jpg,s.jpg,\nb.jpg,s.jpg,\na.jpg,s.jpg,", "row 4: duplicate of row 2", None),
    ],
)
def test_csv_row_errors(tmp_path: Path, rows: str, message: str, field: str | None) -> None:
    m = load(tmp_path, "m.csv", f"content,style,iterations\n{rows}\n")
    assert only_error(m) == (message, field)
    assert len(m.pairs) == len(rows.splitlines()) - 1  # the other rows still run


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("style_weight", "-3", "row 2: style_weight: must be ≥ 0 and finite, got -3.0"),
        ("size", "100000", "row 2: size: must be 16…8192 pixels, got 100000"),
        ("tv_weight", "nan", "row 2: tv_weight: must be ≥ 0 and finite, got nan"),
        ("preserve_colors", "maybe", "row 2: preserve_colors: cannot read 'maybe' as true/false"),
        ("pooling", "min", "row 2: pooling: 'min' is not max or avg"),
        ("beta1", "1", "row 2: beta1/beta2: must be in [0, 1)"),
    ],
)
def test_option_errors_name_the_row_and_option(
    tmp_path: Path, column: str, value: str, message: str
) -> None:
    m = load(tmp_path, "m.csv", f"content,style,{column}\na.jpg,s.jpg,{value}\n")
    assert only_error(m) == (message, column.split("/")[0])


def test_trailing_empty_cells_and_columns_are_not_errors(tmp_path: Path) -> None:
    m = load(tmp_path, "m.csv", "content,style,,\na.jpg,s.jpg,,\nb.jpg,t.jpg\n")
    assert not m.errors and len(m.pairs) == 2


def test_same_pair_with_other_options_is_not_a_duplicate(tmp_path: Path) -> None:
    m = load(
        tmp_path,
        "m.csv",
        "content,style,size\na.jpg,s.jpg,64\na.jpg,s.jpg,128\n./a.jpg,s.jpg,0064\n",
    )
    assert only_error(m) == ("row 4: duplicate of row 2", None)


def test_two_rows_with_one_output(tmp_path: Path) -> None:
    m = load(tmp_path, "m.csv", "content,style,output\na.jpg,s.jpg,out/x\nb.jpg,s.jpg,out\\x.png\n")
    assert only_error(m) == ("row 3: output: 'out/x.png' is already the output of row 2", "output")


@pytest.mark.parametrize(
    ("line", "message", "field"),
    [
        (
            '{"content": "a.jpg", "styel_weight": 3}',
            "row 2: unknown field 'styel_weight' (did you mean 'style_weight'?)",
            "styel_weight",
        ),
        (
            '{"content": "a.jpg", "style": "s.jpg", "size": 64, "size": 65}',
            "row 2: size: given twice",
            "size",
        ),
        (
            '{"content": "a.jpg", "style": "s.jpg",}',
            "row 2: not valid JSON: Expecting property name",
            None,
        ),
        ('["a.jpg", "s.jpg"]', "row 2: expected a JSON object, got a list", None),
        ('{"style": "s.jpg"}', "row 2: content: missing", "content"),
        (
            '{"content": 3, "style": "s.jpg"}',
            "row 2: content: expected a path, got a int",
            "content",
        ),
        (
            '{"content": "a.jpg", "style": "s.jpg", "output": 5}',
            "row 2: output: expected a relative path, got a int",
            "output",
        ),
        (
            '{"content": "a.jpg", "style": "s.jpg", "styles": "t.jpg"}',
            "row 2: styles: give 'style' or 'styles', not both",
            "styles",
        ),
        (
            '{"content": "a.jpg", "style": "s.jpg", "iterations": 1.5}',
            "row 2: iterations: cannot read 1.5 as an integer",
            "iterations",
        ),
        (
            '{"content": "a.jpg", "style": "s.jpg", "style_weight": "-3"}',
            "row 2: style_weight: must be ≥ 0 and finite, got -3.0",
            "style_weight",
        ),
    ],
)
def test_jsonl_row_errors(tmp_path: Path, line: str, message: str, field: str | None) -> None:
    m = load(tmp_path, "m.jsonl", '{"content": "ok.jpg", "style": "s.jpg"}\n' + line + "\n")
    got, got_field = only_error(m)
    assert got.startswith(message) and got_field == field
    assert [p.row for p in m.pairs] == [1]


def test_yaml_row_errors_are_numbered_by_entry(tmp_path: Path) -> None:
    text = "- {content: a.jpg, style: s.jpg}\n- just a string\n- {content: b.jpg, styel: s.jpg}\n"
    m = load(tmp_path, "m.yaml", text)
    assert messages(m) == [
        "row 2: expected a mapping of fields, got text",
        "row 3: unknown field 'styel' (did you mean 'style'?)",
    ]


@pytest.mark.parametrize(
    ("name", "output", "cause"),
    [
        ("dotdot", "../x.png", "has a '..' component"),
        ("deep dotdot", "a/../../x.png", "has a '..' component"),
        ("backslash dotdot", "a\\..\\..\\x.png", "has a '..' component"),
        ("absolute", "/etc/x.png", "is absolute"),
        ("drive", "C:\\x.png", "is absolute"),
        ("unc", "\\\\server\\share\\x.png", "is absolute"),
        ("home", "~/x.png", "starts with '~'"),
        ("empty component", "a//b.png", "has an empty component"),
        ("directory", "a/", "has an empty component"),
        ("dot only", ".", "has an empty component"),
        ("suffix", "x.exe", "has suffix '.exe'; use .png, .jpg, .jpeg, .webp, .tif, .tiff"),
        ("nul", "a\x00.png", "contains a control character"),
        ("newline", "a\nb.png", "contains a control character"),
        ("long component", "x" * 256 + ".png", "has a 260-byte component; at most 255"),
        ("long multibyte", "é" * 128 + ".png", "has a 260-byte component; at most 255"),
        ("long path", "/".join(["d" * 200] * 6) + ".png", "is 1209 bytes; at most 1024"),
    ],
)
def test_hostile_output_names_are_refused(name: str, output: str, cause: str) -> None:
    with pytest.raises(ValueError, match=re.escape(cause)):
        safe_output_name(output)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("a/b.png", "a/b.png"),
        ("a\\b.JPG", "a/b.JPG"),
        ("x", "x.png"),
        ("./x.webp", "x.webp"),
        ("runs/2024.01/x.tiff", "runs/2024.01/x.tiff"),
        ("x" * 251 + ".png", "x" * 251 + ".png"),
    ],
)
def test_safe_output_names(output: str, expected: str) -> None:
    assert safe_output_name(output) == expected


def test_hostile_output_in_a_manifest_is_that_rows_error(tmp_path: Path) -> None:
    m = load(
        tmp_path, "m.csv", "content,style,output\na.jpg,s.jpg,ok\nb.jpg,s.jpg,../../etc/x.png\n"
    )
    message, field = only_error(m)
    cause = "'../../etc/x.png' has a '..' component; outputs stay inside the output root"
    assert message == f"row 3: output: {cause}"
    assert field == "output" and [p.output for p in m.pairs] == ["ok.png"]


# --- whole-manifest errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.csv", ""),
        ("m.csv", "content,style\n"),
        ("m.csv", "content,style\n,\n\n"),
        ("m.tsv", "\n\n"),
        ("m.jsonl", "\n  \n"),
        ("m.yaml", ""),
        ("m.yaml", "[]\n"),
        ("m.yaml", "defaults: {size: 64}\n"),
    ],
)
def test_empty_manifest(tmp_path: Path, name: str, text: str) -> None:
    with pytest.raises(ManifestError, match=r"m\.\w+: the manifest has no rows$"):
        load(tmp_path, name, text)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "m.csv",
            "content,styel_weight\na.jpg,1\n",
            "unknown column 'styel_weight' (did you mean 'style_weight'?)",
        ),
        ("m.csv", "a.jpg,s.jpg\nb.jpg,s.jpg\n", "the first line must name the columns"),
        ("m.csv", "style,output\ns.jpg,x.png\n", "the header has no 'content' column"),
        ("m.csv", "content,output\na.jpg,x.png\n", "the header has no 'style' column"),
        ("m.csv", "content,style,style\na.jpg,s.jpg,t.jpg\n", "column 'style' appears twice"),
        ("m.csv", "content,,style\na.jpg,,s.jpg\n", "column 2 of the header has no name"),
        ("m.txt", "content,style\n", "unknown manifest format 'txt'"),
        ("m.yaml", "just text\n", "expected a list of rows or a mapping, got text"),
        ("m.yaml", "- [unclosed\n", "not valid YAML at line 2"),
        ("m.yaml", "pair: []\n", "unknown top-level key 'pair' (did you mean 'pairs'?)"),
        ("m.yaml", "defaults: [1]\npairs: []\n", "defaults: expected a mapping of options"),
        (
            "m.yaml",
            "defaults: {iteration: 5}\n",
            "defaults: unknown option 'iteration' (did you mean 'iterations'?)",
        ),
        (
            "m.yaml",
            "defaults: {size: 5}\npairs: [{content: a, style: b}]\n",
            "defaults: size: must be 16…8192 pixels, got 5",
        ),
        ("m.yaml", "cross: [[a.jpg, s.jpg]]\n", "cross: each block is a mapping"),
        ("m.yaml", "pairs: {content: a.jpg}\n", "pairs: expected a list of rows, got a mapping"),
        (
            "m.yaml",
            "cross: [{contents: a, styles: b, output: x}]\n",
            "cross: a block cannot set 'output'",
        ),
    ],
)
def test_whole_manifest_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, name, text)
    assert str(caught.value).startswith(str(tmp_path / name) + ": ")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing.csv: cannot read the manifest: not found$"):
        load_manifest(str(tmp_path / "missing.csv"), RUN)
    (tmp_path / "latin1.csv").write_bytes("content,style\ncafé.jpg,s.jpg\n".encode("latin-1"))
    with pytest.raises(
        ManifestError, match=r"latin1.csv: cannot read the manifest: not UTF-8 text \(byte 17\)"
    ):
        load_manifest(str(tmp_path / "latin1.csv"), RUN)
    with pytest.raises(ManifestError, match="unsupported URI scheme 'gs'"):
        load_manifest("gs://bucket/m.csv", RUN)


def test_manifest_source_can_be_read_through_a_callable() -> None:
    read = {"s3://bucket/in/m.csv": "content,style\na.jpg,s.jpg\n"}.__getitem__
    m = load_manifest("s3://bucket/in/m.csv", RUN, read_text=read)
    assert m.pairs[0].content == "s3://bucket/in/a.jpg"


# --- failed.csv ------------------------------------------------------------------------------


def equivalent(m: Manifest) -> list[tuple[object, ...]]:
    return [(p.content, p.styles, p.output, p.options) for p in m.pairs]


def test_failed_rows_csv_round_trips_pairs_from_another_directory(tmp_path: Path) -> None:
    write(tmp_path / "in" / "c" / "x.jpg", "")
    text = """
defaults: {iterations: 40, style_layers: [relu1_1, relu2_1]}
pairs:
  - {content: a.jpg, style: [s.jpg:0.7, "s3://b/t.jpg:0.3"], output: out/a, preserve_colors: yes}
  - {content: b.jpg, style: {path: s.jpg}, style_weight: 1e4, content_layer_weights: [1]}
contents: [c/*.jpg]
styles: [s.jpg]
"""
    original = load(tmp_path / "in", "m.yaml", text)
    assert len(original.pairs) == 3 and not original.errors
    csv_text = failed_rows_csv([pair_row(p) for p in original.pairs])
    assert csv_text.splitlines()[0].startswith("content,style,output,")
    again = load(tmp_path / "elsewhere", "failed.csv", csv_text)
    assert not again.errors, messages(again)
    assert equivalent(again) == equivalent(original)
    assert again.pairs[0].options.style_layers == ("relu1_1", "relu2_1")


def test_failed_rows_csv_round_trips_csv_and_jsonl(tmp_path: Path) -> None:
    csv_m = load(tmp_path / "a", "m.csv", 'content;style;tv_weight\nx.jpg;"s.jpg:2;t.jpg:1";0.5\n')
    jsonl_m = load(
        tmp_path / "b",
        "m.jsonl",
        json.dumps({"content": "y.jpg", "style": ["s.jpg"], "init": "noise"}),
    )
    for original in (csv_m, jsonl_m):
        again = parse_manifest(
            failed_rows_csv([pair_row(p) for p in original.pairs]), "/other/f.csv", RUN
        )
        assert equivalent(again) == equivalent(original)


def test_error_rows_are_written_back_with_absolute_paths_and_fail_the_same_way(
    tmp_path: Path,
) -> None:
    text = "\n".join(
        json.dumps(r)
        for r in [
            {"content": "a.jpg", "style": ["s.jpg:1", "t.jpg"]},
            {"content": "b.jpg", "styles": "s.jpg", "style_weight": -1},
            {"content": "c.jpg", "style": "gs://x/s.jpg"},
        ]
    )
    original = load(tmp_path / "in", "m.jsonl", text)
    assert len(original.errors) == 3
    rows = [error_row(e, original) for e in original.errors]
    assert rows[0]["content"] == str(tmp_path / "in" / "a.jpg")
    assert rows[0]["style"] == f"{tmp_path / 'in' / 's.jpg'}:1.0;{tmp_path / 'in' / 't.jpg'}"
    again = load(tmp_path / "out", "failed.csv", failed_rows_csv(rows))
    causes = [m.split(": ", 1)[1] for m in messages(again)]
    assert causes == [m.split(": ", 1)[1] for m in messages(original)]


def test_failed_rows_csv_writes_style_lists_and_the_styles_alias_as_one_style_cell() -> None:
    rows = [
        {
            "content": "/a.jpg",
            "styles": ["/s.jpg:0.5", {"path": "/t.jpg", "weight": 1}],
            "size": 64,
        },
        {"content": "/b.jpg", "style": "/s.jpg", "style_layers": ("relu1_1", "relu2_1")},
    ]
    assert failed_rows_csv(rows).splitlines() == [
        "content,style,output,size,style_layers",
        "/a.jpg,/s.jpg:0.5;/t.jpg:1.0,,64,",
        '/b.jpg,/s.jpg,,,"relu1_1,relu2_1"',
    ]


def test_weights_and_init_files_resolve_against_the_manifest_like_inputs(tmp_path: Path) -> None:
    text = (
        "content,style,weights,init\n"
        "a.jpg,s.jpg,models/vgg.mat,start.png\n"
        "b.jpg,s.jpg,,noise\n"
        "c.jpg,s.jpg,/abs/w.mat,content\n"
        "d.jpg,s.jpg,models/vgg.mat,\n"
        "d.jpg,s.jpg,models/vgg.mat,\n"  # a duplicate: an error row, written back absolute
    )
    m = load(tmp_path / "in", "m.csv", text)
    a, b, c, d = m.pairs
    assert a.options.weights == str(tmp_path / "in" / "models" / "vgg.mat")
    assert a.options.init == str(tmp_path / "in" / "start.png")
    assert (b.options.weights, b.options.init) == (None, "noise")
    assert (c.options.weights, c.options.init) == ("/abs/w.mat", "content")
    assert pair_row(a)["weights"] == str(tmp_path / "in" / "models" / "vgg.mat")
    (duplicate,) = m.errors
    assert error_row(duplicate, m)["weights"] == str(tmp_path / "in" / "models" / "vgg.mat")
    yaml = "defaults: {weights: w/v.mat}\npairs:\n  - {content: a.jpg, style: s.jpg}\n"
    (y,) = load(tmp_path / "y", "m.yaml", yaml).pairs
    assert y.options.weights == str(tmp_path / "y" / "w" / "v.mat")


def test_weights_in_an_s3_manifest_stay_worker_paths() -> None:
    text = "content,style,weights\na.jpg,s.jpg,models/vgg.mat\n"
    (pair,) = parse_manifest(text, "s3://art/in/m.csv", RUN).pairs
    assert pair.content == "s3://art/in/a.jpg" and pair.options.weights == "models/vgg.mat"
