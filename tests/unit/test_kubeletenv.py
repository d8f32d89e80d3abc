"""kubeletenv: version <-> image tag, editing kubelet.env in place, reading the version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simnode.documents import large_kubelet_env
from torcx_tectonic.edges.envfile import parse_env
from torcx_tectonic.edges.inputfile import MAX_FILE_BYTES
from torcx_tectonic.errors import InputError
from torcx_tectonic.node import kubeletenv


@pytest.mark.parametrize(
    ("version", "tag"),
    [("v1.8.4+coreos.0", "v1.8.4_coreos.0"), ("v1.9.0", "v1.9.0"), ("v1.7.3+coreos.0+x", "v1.7.3_coreos.0_x")],
)
def test_version_and_tag_convert_both_ways(version: str, tag: str) -> None:
    assert kubeletenv.version_to_tag(version) == tag
    assert kubeletenv.tag_to_version(tag) == version


TEMPLATE = """\
# kubelet environment written by the installer
KUBELET_IMAGE_URL=quay.io/coreos/hyperkube
; an old-style comment
KUBELET_IMAGE_TAG=v1.7.0_coreos.0
EXTRA="--node-labels=a=b"
KUBELET_IMAGE_TAG=v1.8.0_coreos.0
TAIL=1
"""


def test_with_value_replaces_only_the_last_assignment_and_keeps_the_rest() -> None:
    result = kubeletenv.with_value(TEMPLATE, "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0")
    assert result == TEMPLATE.replace("KUBELET_IMAGE_TAG=v1.8.0_coreos.0", "KUBELET_IMAGE_TAG=v1.8.4_coreos.0")
    assert parse_env(result, "x")["KUBELET_IMAGE_TAG"] == "v1.8.4_coreos.0"
    assert parse_env(result, "x")["EXTRA"] == "--node-labels=a=b"


def test_with_value_appends_a_missing_key() -> None:
    result = kubeletenv.with_value("# c\nA=1", "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0")
    assert result == "# c\nA=1\nKUBELET_IMAGE_TAG=v1.8.4_coreos.0\n"


def test_with_value_ignores_commented_out_assignments() -> None:
    result = kubeletenv.with_value("#KUBELET_IMAGE_TAG=old\n", "KUBELET_IMAGE_TAG", "new")
    assert result == "#KUBELET_IMAGE_TAG=old\nKUBELET_IMAGE_TAG=new\n"


def test_with_value_quotes_values_that_need_it() -> None:
    result = kubeletenv.with_value("", "OPTS", "a b $c")
    assert parse_env(result, "x") == {"OPTS": "a b $c"}


def test_with_value_is_idempotent() -> None:
    once = kubeletenv.with_value(TEMPLATE, "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0")
    assert kubeletenv.with_value(once, "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0") == once


def test_kubelet_version_reads_the_tag_as_a_version(tmp_path: Path) -> None:
    env = tmp_path / "kubelet.env"
    env.write_text('KUBELET_IMAGE_URL=x\nKUBELET_IMAGE_TAG="v1.8.4_coreos.0"\n')
    assert kubeletenv.kubelet_version(env) == "v1.8.4+coreos.0"


def test_kubelet_version_missing_file(tmp_path: Path) -> None:
    env = tmp_path / "kubelet.env"
    with pytest.raises(InputError) as caught:
        kubeletenv.kubelet_version(env)
    assert f"{env}: missing; expected a kubelet environment file with KUBELET_IMAGE_TAG" in str(caught.value)


@pytest.mark.parametrize("text", ["KUBELET_IMAGE_URL=x\n", "KUBELET_IMAGE_TAG=\n"], ids=["absent", "empty"])
def test_kubelet_version_without_tag(tmp_path: Path, text: str) -> None:
    env = tmp_path / "kubelet.env"
    env.write_text(text)
    with pytest.raises(InputError) as caught:
        kubeletenv.kubelet_version(env)
    assert f"{env}: KUBELET_IMAGE_TAG is missing or empty; expected e.g. KUBELET_IMAGE_TAG=" in str(caught.value)


def test_kubelet_version_malformed_file(tmp_path: Path) -> None:
    env = tmp_path / "kubelet.env"
    env.write_text("KUBELET_IMAGE_TAG=v1.8.4\ngarbage\n")
    with pytest.raises(InputError, match=r"kubelet\.env:2: expected KEY=value"):
        kubeletenv.kubelet_version(env)


def test_with_value_replaces_a_continued_assignment_whole() -> None:
    text = "A=1\nKUBELET_IMAGE_TAG=v1.7.0_\\\ncoreos.0\nB=2\n"
    assert kubeletenv.with_value(text, "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0") == (
        "A=1\nKUBELET_IMAGE_TAG=v1.8.4_coreos.0\nB=2\n")


def test_with_value_ignores_a_lookalike_inside_another_continued_value() -> None:
    text = "OPTS=--a \\\nKUBELET_IMAGE_TAG=not-an-assignment\n"
    assert kubeletenv.with_value(text, "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0") == (
        "OPTS=--a \\\nKUBELET_IMAGE_TAG=not-an-assignment\nKUBELET_IMAGE_TAG=v1.8.4_coreos.0\n")


@pytest.mark.parametrize(
    ("key", "value"),
    [("KUBELET_IMAGE_TAG", "v1.8.4\nEVIL=1"), ("KUBELET_IMAGE_TAG", "v1.8.4\r"), ("A B", "x"), ("A\n", "x"),
     ("KUBELET_IMAGE_TAG", "\x00")],
)
def test_with_value_never_writes_a_second_line(key: str, value: str) -> None:
    with pytest.raises(InputError, match="cannot be written to an environment file; expected a variable name"):
        kubeletenv.with_value("A=1\n", key, value)


def test_with_version_writes_the_installer_copy_with_the_tag(tmp_path: Path) -> None:
    template = tmp_path / "kubelet.env"
    template.write_text(TEMPLATE)
    assert kubeletenv.with_version(template, "v1.8.4+coreos.0") == kubeletenv.with_value(
        TEMPLATE, "KUBELET_IMAGE_TAG", "v1.8.4_coreos.0")


@pytest.mark.parametrize("version", ["v1.8.4\n", "v1.8.4+coreos.0 ", "latest", "v1.8.4'x"])
def test_with_version_refuses_what_is_not_a_version(tmp_path: Path, version: str) -> None:
    template = tmp_path / "kubelet.env"
    template.write_text(TEMPLATE)
    with pytest.raises(InputError, match="expected a Kubernetes version like v1.8.4"):
        kubeletenv.with_version(template, version)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(), "is a directory; expected a kubelet environment file with KUBELET_IMAGE_TAG"),
        (lambda p: p.write_bytes(b"KUBELET_IMAGE_TAG=v1.8.4\xff\n"), "not UTF-8 text (byte 0xff at offset 24)"),
    ],
    ids=["directory", "not-utf8"],
)
@pytest.mark.parametrize("read", [kubeletenv.kubelet_version, lambda p: kubeletenv.with_version(p, "v1.8.4")],
                         ids=["live", "installer"])
def test_unreadable_kubelet_env_is_an_input_error(tmp_path: Path, make: Callable[[Path], object], expected: str,
                                                  read: Callable[[Path], object]) -> None:
    path = tmp_path / "kubelet.env"
    make(path)
    with pytest.raises(InputError) as caught:
        read(path)
    assert str(caught.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("tag", ["latest", "'v1.8.4 x'", "v1.8.4/../x"])
def test_a_tag_that_is_no_kubernetes_version_is_refused(tmp_path: Path, tag: str) -> None:
    path = tmp_path / "kubelet.env"
    path.write_text(f"KUBELET_IMAGE_TAG={tag}\n")
    with pytest.raises(InputError) as caught:
        kubeletenv.kubelet_version(path)
    assert str(caught.value).startswith(f"{path}: KUBELET_IMAGE_TAG {tag.strip(chr(39))!r} is not allowed; expected a "
                                        "Kubernetes version tag like v1.8.4_coreos.0")


def test_a_kubelet_env_of_the_largest_size_read_with_one_long_quoted_value(tmp_path: Path) -> None:
    path = tmp_path / "kubelet.env"
    path.write_text(large_kubelet_env(MAX_FILE_BYTES))
    assert path.stat().st_size == MAX_FILE_BYTES
    text, values = kubeletenv.read_env(path)
    assert values["KUBELET_IMAGE_TAG"] == "v1.8.4_coreos.0"
    assert values["KUBELET_OPTS"] == text.split('"')[1] and len(values["KUBELET_OPTS"]) > MAX_FILE_BYTES - 100
    assert kubeletenv.kubelet_version(path) == "v1.8.4+coreos.0"
