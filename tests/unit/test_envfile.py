"""envfile: the EnvironmentFile= dialect shared by os-release, torcx metadata and kubelet.env."""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Callable

import pytest

from torcx_tectonic.edges import envfile
from torcx_tectonic.edges.envfile import parse_env
from torcx_tectonic.errors import InputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n", {"A": "1"}),
        ('A="quoted value"\n', {"A": "quoted value"}),
        ("A='single quoted'\n", {"A": "single quoted"}),
        ("A=\n", {"A": ""}),
        ("A = spaced\n", {"A": "spaced"}),
        ("export A=1\n", {"A": "1"}),
        ("# comment\n; other comment\n\n   \nA=1\n", {"A": "1"}),
        ("  # indented comment\nA=1\n", {"A": "1"}),
        ("A=1\nA=2\n", {"A": "2"}),
        ("A=first \\\nsecond\n", {"A": "first second"}),
        ("A=one\\\ntwo\\\nthree\nB=b\n", {"A": "onetwothree", "B": "b"}),
        ('A="has # inside"\n', {"A": "has # inside"}),
        ("A=1", {"A": "1"}),
        ("A=tail\\", {"A": "tail"}),
    ],
    ids=[
        "plain",
        "double-quotes",
        "single-quotes",
        "empty",
        "spaces-around",
        "export",
        "comments",
        "indented-comment",
        "later-wins",
        "continuation",
        "continuations",
        "hash-in-quotes",
        "no-final-newline",
        "dangling-backslash",
    ],
)
def test_parse_env(text: str, expected: dict[str, str]) -> None:
    assert parse_env(text, "f.env") == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\nnot an assignment\n", "kubelet.env:2: expected KEY=value, got 'not an assignment'"),
        ("A=1\n\n1BAD=x\n", "kubelet.env:3: expected KEY=value, got '1BAD=x'"),
        ('A=1\nB="unterminated\n', "kubelet.env:2: bad quoting in value '\"unterminated'"),
        ("A=1\nB=x \\\n=y\nC=\n../x\n", "kubelet.env:5: expected KEY=value, got '../x'"),
    ],
    ids=["no-equals", "key-starts-with-digit", "open-quote", "line-number-after-continuation"],
)
def test_malformed_lines_name_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_env(text, "kubelet.env")
    assert expected in str(caught.value)


def test_values_are_split_into_words_exactly_as_shlex_splits_them() -> None:
    """Every value of up to six characters of quotes, backslashes, blanks
    and a letter reads as shlex.split reads it, or fails as it fails."""

    def reading(split: Callable[[str], list[str]], value: str) -> list[str] | str:
        try:
            return split(value)
        except ValueError as err:
            return f"ValueError: {err}"

    values = ["".join(chars) for length in range(1, 7) for chars in itertools.product("a'\"\\ \t", repeat=length)]
    assert [reading(envfile._words, v) for v in values] == [reading(shlex.split, v) for v in values]
