"""Hostile manifests (issue 17): each is one line naming its row or the manifest, or a sensible
result, in bounded time and memory, and the other rows still become pairs."""

from __future__ import annotations

import tracemalloc
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.manifest import (
    MAX_ALIAS_NODES,
    MAX_ROWS,
    Manifest,
    ManifestError,
    error_row,
    failed_rows_csv,
    load_manifest,
    parse_manifest,
)
from stylecore.options import StyleOptions

pytestmark = pytest.mark.timeout(20)  # bounded time: each well under a second or two here
RUN = StyleOptions(iterations=100, size=256)


def parse(text: str, name: str = "m.csv", **kwargs: object) -> Manifest:
    return parse_manifest(text, f"/m/{name}", RUN, **kwargs)


def refused(text: str, name: str = "m.yaml") -> str:
    """The manifest's one-line error."""
    with pytest.raises(ManifestError) as caught:
        parse(text, name)
    message = str(caught.value)
    assert message.startswith(f"/m/{name}: ") and "\n" not in message
    return message.removeprefix(f"/m/{name}: ")


def errors(m: Manifest) -> list[str]:
    return [e.message for e in m.errors]


def contents(m: Manifest) -> list[str]:
    return [p.content for p in m.pairs]


# --- YAML aliases ----------------------------------------------------------------------------


def laughs(levels: int) -> str:
    """A row whose style_layers nest ten aliases a level: 10**levels strings, 1 kB of text."""
    lines = ["- {content: a.jpg, style: s.jpg}", "- content: b.jpg", "  style: s.jpg"]
    lines += ["  style_layers:", "    - &l0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"    - &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def merges(levels: int) -> str:
    """Merge keys ten a level: PyYAML itself would copy 10**levels key/value pairs."""
    lines = ["defaults: {}", "pairs:", "  - &m0 {content: a.jpg, style: s.jpg, size: 64}"]
    for n in range(1, levels):
        lines.append(f"  - &m{n} {{<<: [{', '.join([f'*m{n - 1}'] * 10)}], output: o{n}}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text", [laughs(9), merges(9)], ids=["sequences", "merge keys"])
def test_billion_laughs_is_refused_before_anything_expands(text: str) -> None:
    tracemalloc.start()
    try:
        message = refused(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == f"YAML aliases expand to more than {MAX_ALIAS_NODES:,} nodes"
    assert len(text) < 1000 and peak < 4 * 2**20  # 10**9 nodes, refused in a few MiB


def test_aliases_within_the_limit_still_work_and_a_large_shared_value_is_its_rows_error() -> None:
    m = parse(laughs(5), "m.yaml")  # 10**5 strings under one option: a row error, not a dump
    assert errors(m) == ["row 2: style_layers: a list nested more than 3 deep"]
    assert contents(m) == ["/m/a.jpg"] and m.errors[0].raw["style_layers"].startswith("<a list")
    flat = "pairs:\n  - &r {content: a.jpg, style: s.jpg, style_layers: &l [" + "relu1_1, " * 3000
    m = parse(flat + "]}\n  - {content: b.jpg, style: s.jpg, style_layers: *l}\n", "m.yaml")
    cause = "style_layers: a list of more than 16,384 characters"
    assert errors(m) == [f"row 1: {cause}", f"row 2: {cause}"]
    merged = "pairs:\n  - &r {content: a.jpg, style: s.jpg}\n  - {<<: *r, output: b}\n"
    m = parse(merged, "m.yaml")  # a merge key within the limit: a row like any other
    assert not m.errors and [p.output for p in m.pairs] == [None, "b.png"]
    assert contents(m) == ["/m/a.jpg", "/m/a.jpg"]


def test_an_alias_inside_its_own_value_is_refused() -> None:
    assert refused("pairs: &p [*p]\n") == "a YAML alias refers to the value that holds it"
    text = "- &r {content: a.jpg, style: s.jpg, style_layers: [*r]}\n"
    assert refused(text) == "a YAML alias refers to the value that holds it"


def test_too_many_aliased_rows_are_refused() -> None:
    rows = ", ".join(["*r"] * MAX_ROWS)
    text = f"pairs: [&r {{content: a.jpg, style: s.jpg}}, {rows}]\n"
    assert refused(text) == f"more than {MAX_ROWS:,} rows; split it into several manifests"


# --- values Python will not build ------------------------------------------------------------


def test_values_nested_past_the_stack_or_too_long_to_build() -> None:
    deep = "[" * 5000 + "]" * 5000
    assert refused(f"- {{content: a.jpg, style: {deep}}}\n") == "not valid YAML: nested too deeply"
    big = "9" * 5000
    assert refused(f"- {{content: a.jpg, style: s.jpg, size: {big}}}\n").startswith(
        "not valid YAML: Exceeds the limit (4300 digits) for integer string conversion"
    )
    assert refused("- {content: a.jpg, style: s.jpg, seed: 2024-13-01}\n") == (
        "not valid YAML: month must be in 1..12"
    )
    lines = [
        f'{{"content": "a.jpg", "style": {deep}}}',
        f'{{"content": "b.jpg", "style": "s.jpg", "size": {big}}}',
        '{"content": "c.jpg", "style": [[[["s.jpg"]]]]}',
        '{"content": "d.jpg", "style": "s.jpg"}',
    ]
    m = parse("\n".join(lines) + "\n", "m.jsonl")
    assert errors(m) == [
        "row 1: not valid JSON: nested too deeply",
        "row 2: not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: "
        "value has 5000 digits",
        "row 3: style: a list nested more than 3 deep",
    ]
    assert contents(m) == ["/m/d.jpg"]
    assert "<a list nested" in failed_rows_csv([error_row(e, m) for e in m.errors])


# --- CSV as spreadsheets and editors write it ------------------------------------------------


def test_excel_csv_with_a_bom_semicolons_and_crlf(tmp_path: Path) -> None:
    text = 'content;style;output\r\nphotos/a.jpg;s.jpg;x\r\nb.jpg;"s.jpg;t.jpg";\r\n'
    (tmp_path / "m.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    m = load_manifest(str(tmp_path / "m.csv"), RUN)
    assert not m.errors and [p.row for p in m.pairs] == [2, 3]
    assert contents(m) == [str(tmp_path / "photos" / "a.jpg"), str(tmp_path / "b.jpg")]
    assert [len(p.styles) for p in m.pairs] == [1, 2] and m.pairs[0].output == "x.png"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.csv", 'content,style\r\na.jpg,"s.jpg;\r\nt.jpg"\r\nb.jpg,s.jpg\r\n'),
        (
            "m.jsonl",
            '{"content": "a.jpg", "style": ["s.jpg", "t.jpg"]}\r\n\r\n'
            '{"content": "b.jpg", "style": "s.jpg"}\r\n',
        ),
        (
            "m.yaml",
            "- content: a.jpg\r\n  style: [s.jpg, t.jpg]\r\n- {content: b.jpg, style: s.jpg}\r\n",
        ),
    ],
)
def test_crlf_line_ends(name: str, text: str) -> None:
    m = parse(text, name)
    assert not m.errors and contents(m) == ["/m/a.jpg", "/m/b.jpg"]
    assert [s.uri for s in m.pairs[0].styles] == ["/m/s.jpg", "/m/t.jpg"]


def test_a_nul_is_its_rows_error_and_a_utf16_header_the_manifests() -> None:
    m = parse("content,style,size\na\x00.jpg,s.jpg,\nb.jpg,s.jpg,6\x004\nc.jpg,s.jpg,64\n")
    assert errors(m) == [
        "row 2: content: contains a NUL character (\\x00); is the file text?",
        "row 3: size: contains a NUL character (\\x00); is the file text?",
    ]
    assert contents(m) == ["/m/c.jpg"]
    utf16 = "content,style\na.jpg,s.jpg\n".encode("utf-16-le").decode("utf-8")
    assert refused(utf16, "m.csv") == (
        "the header contains NUL characters; is the file UTF-16? Save it as UTF-8"
    )


def test_a_field_of_a_megabyte_is_its_rows_error() -> None:
    huge = "x" * 2**20
    m = parse(f"content,style,style_layers\n{huge}.jpg,s.jpg,\nb.jpg,s.jpg,{huge}\nc.jpg,s.jpg,\n")
    assert errors(m) == [
        "row 2: content: text of 1,048,580 characters, more than 16,384",
        "row 3: style_layers: text of 1,048,576 characters, more than 16,384",
    ]
    assert contents(m) == ["/m/c.jpg"]
    with pytest.raises(ManifestError, match=r"m.csv: line 2: field larger than field limit"):
        parse(f"content,style\n{'x' * (16 * 2**20 + 1)},s.jpg\n")


def test_a_long_value_is_quoted_in_a_message_of_bounded_length() -> None:
    m = parse(f"content,style,iterations\na.jpg,s.jpg,{'9' * 5000}\n")
    message = errors(m)[0]
    assert len(message) <= 501 and message.startswith("row 2: iterations: cannot read '999")
    assert message.endswith("999' as an integer") and "…" in message


# --- names -----------------------------------------------------------------------------------


def test_two_rows_naming_one_output_even_in_another_case_or_unicode_form() -> None:
    nfd = unicodedata.normalize("NFD", "café")
    rows = (
        f"a.jpg,s.jpg,out/Cat\nb.jpg,s.jpg,out/cat.png\nc.jpg,s.jpg,out\\Cat\nd.jpg,s.jpg,{nfd}\n"
    )
    m = parse(f"content,style,output\n{rows}e.jpg,s.jpg,café\n")
    assert errors(m) == [
        "row 3: output: 'out/cat.png' is already the output of row 2 as 'out/Cat.png' "
        "(one file on macOS, Windows)",
        "row 4: output: 'out/Cat.png' is already the output of row 2",
        f"row 6: output: 'café.png' is already the output of row 5 as '{nfd}.png' "
        "(one file on macOS, Windows)",
    ]
    assert contents(m) == ["/m/a.jpg", "/m/d.jpg"]


def test_spaces_accents_emoji_and_rtl_marks_in_names_are_kept_as_written() -> None:
    nfc, nfd = "photos/café au lait.jpg", unicodedata.normalize("NFD", "photos/thé.jpg")
    rows = [
        f" {nfc} ,🎨 styles/starry night.jpg,résumé 🎨/mon chat",
        f"{nfd},\u200fשמש.jpg,שמש",
        "👨\u200d👩\u200d👧.jpg,s.jpg,👨\u200d👩\u200d👧",
        "a.jpg,s.jpg,می\u200cخواهم",
    ]
    m = parse("content,style,output\n" + "\n".join(rows) + "\n")
    assert not m.errors
    assert contents(m) == [f"/m/{nfc}", f"/m/{nfd}", "/m/👨\u200d👩\u200d👧.jpg", "/m/a.jpg"]
    assert m.pairs[1].styles[0].uri == "/m/\u200fשמש.jpg"  # a file's name, byte for byte
    outputs = [p.output for p in m.pairs]
    assert outputs == [
        "résumé 🎨/mon chat.png",
        "שמש.png",
        "👨\u200d👩\u200d👧.png",
        "می\u200cخواهم.png",
    ]


@pytest.mark.parametrize(
    ("output", "cause"),
    [
        ("a\u200f.png", "contains U+200F RIGHT-TO-LEFT MARK, invisible"),
        ("a\u202eb", "contains U+202E RIGHT-TO-LEFT OVERRIDE, invisible"),
        ("a\u200bb", "contains U+200B ZERO WIDTH SPACE, invisible"),
        ("a\ufeffb", "contains U+FEFF ZERO WIDTH NO-BREAK SPACE, invisible"),
        ("a\u200db", "contains U+200D ZERO WIDTH JOINER, invisible"),  # between ASCII letters
        ("a\u2028b", "contains a control character"),
        ("a\x85b", "contains a control character"),
    ],
)
def test_invisible_characters_in_an_output_name_are_its_rows_error(output: str, cause: str) -> None:
    m = parse(f'content,style,output\na.jpg,s.jpg,"{output}"\nb.jpg,s.jpg,b\n')
    assert contents(m) == ["/m/b.jpg"] and [e.field for e in m.errors] == ["output"]
    assert errors(m)[0] == f"row 2: output: {output!r} {cause}" + (
        ": it would look like another name" if "U+" in cause else ""
    )


def test_the_manifest_itself_or_a_folder_as_an_input_is_still_a_pair() -> None:
    m = parse("content,style\nm.csv,.\nphotos/,../m\n")  # reading them fails later, per pair
    assert not m.errors and contents(m) == ["/m/m.csv", "/m/photos"]
    assert [p.styles[0].uri for p in m.pairs] == ["/m", "/m"]
    m = parse("contents: [m.yaml, photos/]\nstyles: [.]\n", "m.yaml")
    assert not m.errors and contents(m) == ["/m/m.yaml", "/m/photos"]


# --- rows without end ------------------------------------------------------------------------


def many(n: int, styles: int = 1) -> Callable[[str], list[str]]:
    """A glob (parse_manifest's own parameter) that finds `n` photos and `styles` styles."""

    def glob(pattern: str) -> list[str]:
        if "photos" in pattern:
            return [f"/m/photos/img{i:06d}.jpg" for i in range(n)]
        return [f"/m/styles/s{i}.jpg" for i in range(styles)]

    return glob


def test_a_cross_block_of_a_hundred_thousand_pairs_is_read() -> None:
    m = parse(
        "cross:\n  - {contents: [photos/*.jpg], styles: [styles/*.jpg]}\n",
        "m.yaml",
        glob=many(MAX_ROWS),
    )
    assert not m.errors and len(m.pairs) == MAX_ROWS and m.pairs[-1].row == MAX_ROWS
    assert len({id(p.options) for p in m.pairs}) == 1  # one options value, shared


def test_a_cross_block_past_the_limit_is_its_rows_error_naming_it() -> None:
    text = (
        "pairs: [{content: a.jpg, style: s.jpg}]\n"
        "cross:\n"
        "  - {contents: [photos/*.jpg], styles: [styles/*.jpg]}\n"
        "  - {contents: [b.jpg], styles: [s.jpg]}\n"
    )
    m = parse(text, "m.yaml", glob=many(MAX_ROWS, styles=2))
    assert errors(m) == [
        "row 2: cross block 1: 100,000 contents × 2 styles make 200,000 pairs, more than the "
        "99,999 rows left of the 100,000 a manifest may have"
    ]
    assert contents(m) == ["/m/a.jpg", "/m/b.jpg"] and [p.row for p in m.pairs] == [1, 3]
    m = parse("contents: [photos/*.jpg]\nstyles: [styles/*.jpg]\n", "m.yaml", glob=many(200_000))
    assert errors(m) == [
        "row 1: the top-level contents × styles: 200,000 contents × 1 style make 200,000 "
        "pairs, more than the 100,000 rows a manifest may have"
    ]


@pytest.mark.parametrize(
    ("name", "header", "row"),
    [("m.csv", "content,style\n", "a.jpg,s.jpg\n"), ("m.jsonl", "", '{"content": "a.jpg"}\n')],
)
def test_more_rows_than_the_limit_refuse_the_manifest(name: str, header: str, row: str) -> None:
    message = refused(header + row * (MAX_ROWS + 1), name)
    assert message == f"more than {MAX_ROWS:,} rows; split it into several manifests"
