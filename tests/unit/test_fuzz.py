"""Property tests of every parser of outside input: whatever the text or
bytes, only the project's own errors come out, in bounded time and memory.

Inputs are random, or real documents mutated (characters inserted, deleted,
replaced, lines doubled) with fragments that have broken parsers before:
aliases, tags, NULs, huge numbers, deep brackets, duplicate keys.
"""

from __future__ import annotations

import base64
import json
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torcx_tectonic import config
from torcx_tectonic.cluster import kube, mappings
from torcx_tectonic.edges import signature
from torcx_tectonic.errors import ConfigError, TorcxTectonicError
from torcx_tectonic.node import kubeletenv, osrelease
from torcx_tectonic.torcx import manifest, profile

#: Each property: enough examples to find what a person would not try, and a
#: whole file that stays well under 20 seconds.
FUZZ = settings(max_examples=200, deadline=timedelta(seconds=2), database=None,
                suppress_health_check=[HealthCheck.too_slow])
#: More than any parse of a small document needs; an expansion would blow it.
MAX_PEAK_BYTES = 32 << 20

FRAGMENTS = st.sampled_from([
    "\n", "\r\n", "\r", "\t", " ", "\x00", "\x1b", "\ufeff", "\u2028", "\xff", "é", ":", ": ", "- ", "-", "#", ";",
    "=", '"', "'", "\\", "{", "}", "[", "]", ",", "&a ", "*a", "<<: ", "!!int ", "!!binary ", "!!python/name:os ",
    "? ", "|", ">", "~", "null", "true", "\"false\"", "1e308", "-1", "0x1F", "9" * 60, "1.10", "17.03", "[" * 60,
    "../", "/", "%", "{{.Board}}", "{{.OSVersion}}", "[torcx]", "[DEFAULT]", "rem ", "retries = 1\n", "==",
    "=AAAA", "-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----END PGP PUBLIC KEY BLOCK-----", "NaN", "\"a\": 1, \"a\": 2",
])


@st.composite
def mutated(draw: st.DrawFn, samples: tuple[str, ...]) -> str:
    """One of ``samples`` with a few random edits."""
    text = draw(st.sampled_from(samples))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "replace", "double-line"]))
        piece = draw(FRAGMENTS | st.text(max_size=6))
        if edit == "insert":
            text = text[:at] + piece + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 8)):]
        elif edit == "replace":
            text = text[:at] + piece + text[at + len(piece):]
        else:
            lines = text.split("\n")
            index = min(at, len(lines) - 1)
            text = "\n".join([*lines[:index + 1], lines[index], *lines[index + 1:]])
    return text


def texts(*samples: str) -> st.SearchStrategy[str]:
    return mutated(samples) | st.text(max_size=300)


def only_project_errors(parse: Callable[[], object], allowed: type[Exception] = TorcxTectonicError) -> None:
    """Run ``parse``: it returns, or raises ``allowed``, within the memory bound."""
    tracemalloc.start()
    try:
        parse()
    except allowed:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES


MANIFEST = json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": [
    {"name": "docker", "defaultVersion": "17.03", "versions": [
        {"version": "17.03", "hash": "sha512-" + "a" * 128, "sourcePackage": "app-torcx/docker-17.03",
         "locations": [{"path": "/usr/share/torcx/store/docker:17.03.torcx.tgz"}, {"url": "https://b/d.tgz"}]}]}]}},
    indent=1)
MAPPINGS = (
    "kind: VersionManifestV1\nversions:\n  k8s:\n    1.8:\n      docker: [17.03, 1.12]\n"
    "    '1.10': {docker: ['17.03']}\n"
)
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://10.3.0.1:443", certificate-authority-data: LS0tLS0=, insecure-skip-tls-verify: false}
users:
- name: u
  user: {token: abc}
contexts:
- name: ctx
  context: {cluster: c, user: u}
current-context: ctx
"""
OS_RELEASE = 'NAME="Container Linux"\nVERSION_ID=1632.3.0\nCOREOS_BOARD="amd64-usr"\n# c\nX=\'a b\' \\\n  c\n'
PROFILE = json.dumps({"kind": "profile-manifest-v1",
                      "value": {"images": [{"name": "docker", "reference": "17.03", "remote": "r"}]}})
CONFIG = config.render_default().replace("#", "") + "[network]\nretries = 3\n"
KEYRING = "\n".join([signature.ARMOR_BEGIN, "Version: x", "", base64.b64encode(b"\x99\x01\x02" * 20).decode(),
                     "=" + base64.b64encode(signature.crc24(b"\x99\x01\x02" * 20).to_bytes(3, "big")).decode(),
                     signature.ARMOR_END])


@FUZZ
@given(texts(MANIFEST) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")), st.booleans())
def test_manifest(text: str, as_bytes: bool) -> None:
    data: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    only_project_errors(lambda: manifest.parse_package_list(data, "m.json").versions_of("docker"))


@FUZZ
@given(texts(MAPPINGS), st.text(max_size=12))
def test_mappings(text: str, version: str) -> None:
    only_project_errors(lambda: mappings.parse_mappings(text, "m.yaml").versions_for(version or "v1.8.4"))


@FUZZ
@given(texts(KUBECONFIG))
def test_kubeconfig(text: str) -> None:
    only_project_errors(lambda: kube.parse_kubeconfig(text, "kubeconfig", Path("/nonexistent")))


@FUZZ
@given(texts(OS_RELEASE), st.sampled_from(["x86_64", "riscv64"]))
def test_os_release_and_env_files(text: str, machine: str) -> None:
    only_project_errors(lambda: osrelease.os_release_from_text(text, "os-release", machine=machine))


@FUZZ
@given(texts(OS_RELEASE), st.text(max_size=12), st.text(max_size=20))
def test_kubelet_env_editing(text: str, key: str, value: str) -> None:
    only_project_errors(lambda: kubeletenv.with_value(text, key or "KUBELET_IMAGE_TAG", value))


@FUZZ
@given(texts(PROFILE))
def test_profile(text: str) -> None:
    only_project_errors(lambda: profile.parse_profile(text, "p.json"))


@FUZZ
@given(texts(KEYRING))
def test_armored_keyring(text: str) -> None:
    only_project_errors(lambda: signature.dearmor(text, "keyring.asc"))


@FUZZ
@given(texts(CONFIG), texts(CONFIG))
def test_configuration_texts(main: str, dropin: str) -> None:
    only_project_errors(lambda: config.build(config.collect([("main.conf", main), ("10-x.conf", dropin)])),
                        allowed=ConfigError)


@FUZZ
@given(texts(CONFIG).map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=400),
       st.binary(max_size=100))
def test_configuration_files(tmp_path_factory: pytest.TempPathFactory, main: bytes, dropin: bytes) -> None:
    """Whatever bytes are in the files, config.load raises nothing but
    ConfigError, so the generator can always fall back to the defaults."""
    directory = tmp_path_factory.getbasetemp() / "fuzz-config"
    (directory / "conf.d").mkdir(parents=True, exist_ok=True)
    (directory / "torcx-tectonic.conf").write_bytes(main)
    (directory / "conf.d" / "10-x.conf").write_bytes(dropin)
    only_project_errors(lambda: config.load(directory / "torcx-tectonic.conf", directory / "conf.d"),
                        allowed=ConfigError)


@FUZZ
@given(st.text(max_size=40) | st.from_regex(r"v?[0-9]{1,3}\.[0-9]{1,3}(\.[0-9]{1,3})?[-+_.a-z0-9]{0,8}\s?"))
def test_versions(text: str) -> None:
    only_project_errors(lambda: mappings.kube_minor(text))
    only_project_errors(lambda: osrelease.parse_os_version(text, "x"))
    only_project_errors(lambda: manifest.manifest_url("https://b/{{.Board}}/{{.OSVersion}}", text, text))


#: What a configuration that sets nothing is made of, and what would make it set something.
NOTHING_SET = st.lists(st.sampled_from([
    "", "# c", "#key = 1", "; c", "[torcx]", "[network]", "[metrics]", " ", "\t", "\r", "  # indented", "[torcx] ",
    "[DEFAULT]", "[other]", "rem x", "REM x", "\ufeff# c", "retries = 1", " retries = 1", "[torcx", "#\x00",
]), max_size=12).map("\n".join)


@FUZZ
@given(NOTHING_SET | texts(config.render_default()))
def test_a_text_said_to_set_nothing_is_one_iniparse_finds_nothing_in(text: str) -> None:
    # The generator does not load iniparse for such a text: it must not miss a key or an error.
    import io

    import iniparse  # type: ignore[import-untyped]

    if config.sets_nothing(text):
        document = iniparse.INIConfig(io.StringIO(text), optionxformvalue=None)
        assert [(section, key) for section in document for key in document[section]] == []
        assert config.collect([("x.conf", text)]) == {}
