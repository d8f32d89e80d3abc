"""inputfile: the one bounded, strict reader, strict JSON, grammars; errors.shown."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from torcx_tectonic.edges import inputfile
from torcx_tectonic.edges.inputfile import KUBE_VERSION, NAME, NODE_NAME, OS_VERSION
from torcx_tectonic.errors import ConfigError, InputError, shown


def test_reads_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("héllo\n")
    assert inputfile.read_text(path, "a greeting") == "héllo\n"
    assert inputfile.read_bytes(path, "a greeting") == "héllo\n".encode()
    assert inputfile.read_text_if_exists(path, "a greeting") == "héllo\n"
    assert inputfile.read_text_if_exists(tmp_path / "missing", "a greeting") is None


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "missing; expected a greeting"),
        (lambda p: p.mkdir(), "is a directory; expected a greeting"),
        (_fifo, "is not a regular file; expected a greeting"),
        (lambda p: p.write_bytes(b"x" * 101), "larger than 100 bytes; expected a greeting"),
        (lambda p: p.write_bytes(b"ok\xc3("), "not UTF-8 text (byte 0xc3 at offset 2); expected a greeting"),
        (lambda p: p.write_bytes(b"a\x00b"), "contains a NUL byte at offset 1; expected a greeting"),
        (lambda p: p.symlink_to(p), "cannot open (Too many levels of symbolic links); expected a greeting"),
    ],
    ids=["missing", "directory", "fifo", "too-large", "not-utf8", "nul", "symlink-loop"],
)
def test_what_is_not_a_small_text_file_is_an_error_naming_the_path(
    tmp_path: Path, make: Callable[[Path], object], expected: str
) -> None:
    path = tmp_path / "f"
    make(path)
    with pytest.raises(InputError) as caught:
        inputfile.read_text(path, "a greeting", limit=100)
    assert str(caught.value) == f"{path}: {expected}"


def test_the_error_type_is_the_callers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory; expected an INI file"):
        inputfile.read_text(tmp_path, "an INI file", error=ConfigError)


def test_a_device_is_not_read(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="/dev/zero: is not a regular file"):
        inputfile.read_bytes(Path("/dev/zero"), "a keyring")


def test_a_directory_where_a_missing_file_may_be_is_still_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        inputfile.read_text_if_exists(tmp_path, "next-profile")


# --- JSON -----------------------------------------------------------------------------------------


def test_parse_json() -> None:
    assert inputfile.parse_json(b'{"a": [1, 2.5, "x", null, true]}', "d", "a doc") == {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1,\n "a": 2}', "d: key 'a' appears twice in one object; expected a doc"),
        ('{"a": NaN}', "d: NaN is not JSON; expected a doc"),
        ('[Infinity]', "d: Infinity is not JSON; expected a doc"),
        ("1" * 41, "d: a number of 41 digits; expected a doc"),
        ("[" * 100_000 + "]" * 100_000, "d: JSON nested too deeply; expected a doc"),
        ('{\n"a": }', "d:2: not valid JSON (Expecting value); expected a doc"),
        ("", "d:1: not valid JSON (Expecting value); expected a doc"),
    ],
    ids=["duplicate-key", "nan", "infinity", "huge-int", "deep", "syntax", "empty"],
)
def test_parse_json_refuses_ambiguous_or_costly_documents(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        inputfile.parse_json(text, "d", "a doc")
    assert str(caught.value) == expected


def test_parse_json_of_bytes_decodes_strictly() -> None:
    with pytest.raises(InputError, match="d: not UTF-8 text"):
        inputfile.parse_json(b'{"a": "\xff"}', "d", "a doc")


# --- grammars ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "good", "bad"),
    [
        (
            OS_VERSION,
            ["1632.3.0", "0.0.0", "2345.99.1"],
            ["v1632.3.0", "1632.03.0", "1632.3.0 ", "1632.3", "1632.3.0.1", "\u0661632.3.0", "1632.3.0\n",
             "1" * 10 + ".0.0"],
        ),
        (NAME, ["docker", "17.03", "1.12.6-r1", "v1.8.4+coreos.0"], ["", ".x", "..", "a..b", "a/b", "a:b", "x" * 101]),
        (NODE_NAME, ["node-1", "ip-10-0-0-1.ec2.internal", "a"],
         ["", "Node-1", "-a", "a-", "a..b", "../x", "a_b", "a" * 254, "a\n"]),
        (KUBE_VERSION, ["v1.8.4+coreos.0", "1.8.4", "v1.10", "v1.8.4_coreos.0"],
         ["v1.8.4\n", " v1.8.4", "latest", "v01.8", "v1.8.4/../x"]),
    ],
    ids=["os-version", "name", "node-name", "kube-version"],
)
def test_grammars(rule: inputfile.Grammar, good: list[str], bad: list[str]) -> None:
    assert all(rule.matches(value) for value in good), [v for v in good if not rule.matches(v)]
    assert not any(rule.matches(value) for value in bad), [v for v in bad if rule.matches(v)]


def test_grammar_check_names_origin_what_and_expectation() -> None:
    assert OS_VERSION.check("1632.3.0", "OS version", "here") == "1632.3.0"
    with pytest.raises(InputError) as caught:
        OS_VERSION.check(7, "OS version", "/usr/lib/os-release", hint="see torcx")
    assert str(caught.value) == (
        "/usr/lib/os-release: OS version 7 is not allowed; expected MAJOR.MINOR.PATCH, three whole numbers without "
        "leading zeros like 1632.3.0 (see torcx)"
    )


@pytest.mark.parametrize(
    ("value", "good"),
    [
        ("https://bucket.example/m.json", True),
        ("http://127.0.0.1:8080/x", True),
        ("https://[::1]:443/", True),
        ("ftp://bucket/m.json", False),
        ("https:///m.json", False),
        ("https://host:port/", False),
        ("https://host:99999/", False),
        ("https://ho st/", False),
        ("https://host/\n", False),
        ("https://hôst/", False),
        (None, False),
    ],
)
def test_is_url(value: object, good: bool) -> None:
    assert inputfile.is_url(value, ("https", "http")) is good


# --- errors.shown ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("abc", "'abc'"),
        ("x" * 100, repr("x" * 80) + "…"),
        (b"ab", "b'ab'"),
        ({"a": 1}, "a mapping"),
        ([1] * 10**6, "a list"),
        (None, "None"),
        (True, "True"),
        (1.5, "1.5"),
        (10**400, "a very large number"),
        (object(), "a object"),
    ],
)
def test_shown_is_short_whatever_the_value(value: object, text: str) -> None:
    assert shown(value) == text
