"""Malformed and hostile input at every edge, as a new user would try it.

Each case prepares a node (files under a temporary root, answers of a local
HTTP server), snapshots the root, calls one reader or client, and asserts:
a project error (a TorcxTectonicError subclass, never another exception), a
message that names the source (path:line, URL or field) and what was
expected, and a root that is byte for byte and mtime for mtime as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from torcx_tectonic import config, strategy
from torcx_tectonic.cluster import kube, mappings
from torcx_tectonic.edges import signature
from torcx_tectonic.errors import (
    ConfigError,
    InputError,
    NetworkError,
    TorcxTectonicError,
    VerificationError,
)
from torcx_tectonic.node import dockerdata, kubeletenv, osrelease
from torcx_tectonic.torcx import profile, store
from torcx_tectonic.torcx.bucket import Bucket, load_manifest

from .helpers import RoutedServer, http_server, make_config, sha512

Thunk = Callable[[], object]


@dataclass
class Node:
    """Where a case puts its input: files under ``root``, answers of ``server``."""

    root: Path
    server: RoutedServer

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    @property
    def url(self) -> str:
        return self.server.base


@dataclass(frozen=True)
class Case:
    """``setup`` prepares the node and returns the call under test;
    ``source`` and ``expected`` must both be in the message (``{root}`` and
    ``{url}`` are filled in)."""

    id: str
    setup: Callable[[Node], Thunk]
    error: type[TorcxTectonicError]
    source: str
    expected: str


CASES: list[Case] = []


def case(id: str, error: type[TorcxTectonicError], source: str, expected: str) -> Callable[
        [Callable[[Node], Thunk]], Callable[[Node], Thunk]]:
    def register(setup: Callable[[Node], Thunk]) -> Callable[[Node], Thunk]:
        CASES.append(Case(id, setup, error, source, expected))
        return setup
    return register


def table(error: type[TorcxTectonicError], make: Callable[[Node, Any], Thunk],
          rows: list[tuple[str, Any, str, str]]) -> None:
    """Register one case per row: (id, input, source, expected)."""
    for id, value, source, expected in rows:
        CASES.append(Case(id, _bound(make, value), error, source, expected))


def _bound(make: Callable[[Node, Any], Thunk], value: Any) -> Callable[[Node], Thunk]:
    return lambda node: make(node, value)


# --- the package manifest (as a later step reads the saved copy) ---------------------------------------

HASH = "sha512-" + "a" * 128
GOOD_VERSION = {"version": "17.03", "hash": HASH, "locations": [{"url": "https://b/d.tgz"}]}


def _manifest_doc(*versions: Any, packages: Any = None) -> bytes:
    listed = packages if packages is not None else [{"name": "docker", "versions": list(versions)}]
    return json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": listed}}).encode()


def _saved_manifest(node: Node, data: bytes) -> Thunk:
    path = node.file("run/facts/manifest-1632.3.0.json", data)
    return lambda: load_manifest(path)


MANIFEST = "{root}/run/facts/manifest-1632.3.0.json"
table(InputError, _saved_manifest, [
    ("manifest-empty", b"", MANIFEST + ":1", "expected a torcx-package-list-v0 JSON document"),
    ("manifest-html", b"<html>404</html>", MANIFEST + ":1", "not valid JSON"),
    ("manifest-binary", b"\x1f\x8b\x08\x00\xff", MANIFEST, "not UTF-8 text"),
    ("manifest-nul", b'{"kind": "\x00"}', MANIFEST, "contains a NUL byte"),
    ("manifest-deep", b"[" * 100_000, MANIFEST, "JSON nested too deeply"),
    ("manifest-nan", b'{"kind": NaN}', MANIFEST, "NaN is not JSON"),
    ("manifest-huge-int", b'{"kind": ' + b"9" * 5000 + b"}", MANIFEST, "a number of 5000 digits"),
    ("manifest-duplicate-key", b'{"kind": "torcx-package-list-v0", "kind": "x"}', MANIFEST, "appears twice"),
    ("manifest-kind", b'{"kind": "torcx-package-list-v1", "value": {}}', MANIFEST,
     "expected 'torcx-package-list-v0'"),
    ("manifest-list", b"[]", MANIFEST, "kind is None; expected 'torcx-package-list-v0'"),
    ("manifest-no-value", b'{"kind": "torcx-package-list-v0"}', MANIFEST, "missing 'value'"),
    ("manifest-packages-object", _manifest_doc(packages={}), MANIFEST + ": value.packages",
     "expected list, got dict"),
    ("manifest-package-name-traversal", _manifest_doc(packages=[{"name": "../docker", "versions": []}]),
     MANIFEST + ": value.packages[0]", "package name '../docker' is not allowed; expected letters"),
    ("manifest-version-traversal", _manifest_doc({**GOOD_VERSION, "version": "../../etc"}),
     "value.packages[0].versions[0]", "version '../../etc' is not allowed"),
    ("manifest-version-newline", _manifest_doc({**GOOD_VERSION, "version": "17.03\n"}),
     "value.packages[0].versions[0]", "version '17.03\\n' is not allowed"),
    ("manifest-hash-sha256", _manifest_doc({**GOOD_VERSION, "hash": "sha256-" + "a" * 64}),
     "versions[0].hash", "is not 'sha512-' followed by 128 lowercase hex digits"),
    ("manifest-hash-number", _manifest_doc({**GOOD_VERSION, "hash": 5}), "versions[0].hash",
     "expected str, got int"),
    ("manifest-location-file-url-escape",
     _manifest_doc({**GOOD_VERSION, "locations": [{"url": "file:///srv/mirror/../../etc/shadow"}]}),
     "versions[0].locations[0].url", "is not an http(s) URL, nor a file:// URL of an absolute path"),
    ("manifest-location-file-url-host",
     _manifest_doc({**GOOD_VERSION, "locations": [{"url": "file://mirror.example/srv/d.tgz"}]}),
     "versions[0].locations[0].url", "is not an http(s) URL, nor a file:// URL"),
    ("manifest-location-file-url-relative", _manifest_doc({**GOOD_VERSION, "locations": [{"url": "file:d.tgz"}]}),
     "versions[0].locations[0].url", "is not an http(s) URL, nor a file:// URL"),
    ("manifest-location-file-url-escaped",
     _manifest_doc({**GOOD_VERSION, "locations": [{"url": "file:///srv/%2e%2e/etc/shadow"}]}),
     "versions[0].locations[0].url", "no query, fragment or '%'"),
    ("manifest-location-relative", _manifest_doc({**GOOD_VERSION, "locations": [{"path": "store/d.tgz"}]}),
     "versions[0].locations[0]", "expected an absolute path without '..'"),
    ("manifest-location-escape",
     _manifest_doc({**GOOD_VERSION, "locations": [{"path": "/usr/share/torcx/store/../../../etc/shadow"}]}),
     "versions[0].locations[0]", "expected an absolute path without '..'"),
    ("manifest-location-empty", _manifest_doc({**GOOD_VERSION, "locations": [{}]}), "versions[0].locations[0]",
     "expected 'path' or 'url'"),
    ("manifest-version-twice", _manifest_doc(GOOD_VERSION, {**GOOD_VERSION, "hash": "sha512-" + "b" * 128}),
     MANIFEST + ": value.packages[0]", "(versions[0] and versions[1]); expected each once"),
    ("manifest-package-twice", _manifest_doc(packages=[{"name": "docker", "versions": []}] * 2),
     MANIFEST + ": value", "(packages[0] and packages[1]); expected each once"),
    ("manifest-default-version-type", _manifest_doc(packages=[{"name": "d", "defaultVersion": 1, "versions": []}]),
     "value.packages[0].defaultVersion", "expected str, got int"),
])


@case("manifest-directory", InputError, "{root}/run/facts/manifest.json", "is a directory; expected a manifest")
def _manifest_directory(node: Node) -> Thunk:
    (node.root / "run/facts/manifest.json").mkdir(parents=True)
    return lambda: load_manifest(node.root / "run/facts/manifest.json")


# --- signature and keyring -----------------------------------------------------------------------------

ARMOR = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{body}\n{crc}-----END PGP PUBLIC KEY BLOCK-----\n")


def _keyring(node: Node, content: str | bytes) -> Thunk:
    path = node.file("etc/torcx-tectonic/keyring.asc", content)
    return lambda: signature.load_keyring(path)


KEYRING = "keyring {root}/etc/torcx-tectonic/keyring.asc"
table(InputError, _keyring, [
    ("keyring-empty", b"", KEYRING, "file is empty; expected OpenPGP public keys"),
    ("keyring-no-end", ARMOR.format(body="mZk=", crc="").replace("-----END PGP PUBLIC KEY BLOCK-----", ""),
     "{root}/etc/torcx-tectonic/keyring.asc", "has no '-----END PGP PUBLIC KEY BLOCK-----' line"),
    ("keyring-bad-base64", ARMOR.format(body="not*base64!", crc=""), "{root}/etc/torcx-tectonic/keyring.asc",
     "armored keyring is not valid base64"),
    ("keyring-checksum-not-base64", ARMOR.format(body="mZk=", crc="=ab!c\n"),
     "{root}/etc/torcx-tectonic/keyring.asc", "armor checksum line '=ab!c' is not '=' and 4 base64 characters"),
    ("keyring-checksum-wrong", ARMOR.format(body="mZk=", crc="=AAAA\n"), "{root}/etc/torcx-tectonic/keyring.asc",
     "armored keyring checksum does not match"),
    ("keyring-non-ascii", ARMOR.format(body="mZk\u00e9", crc=""), "{root}/etc/torcx-tectonic/keyring.asc",
     "not valid base64"),
    ("keyring-only-begin-word", "-----BEGIN something else\n", "{root}/etc/torcx-tectonic/keyring.asc",
     "no '-----BEGIN PGP PUBLIC KEY BLOCK-----' block"),
    ("keyring-too-large", b"\x99" * (signature.MAX_KEYRING_BYTES + 1), KEYRING, "larger than 1048576 bytes"),
])


@case("keyring-missing", InputError, KEYRING, "missing; expected an OpenPGP keyring (binary or armored)")
def _keyring_missing(node: Node) -> Thunk:
    return lambda: signature.load_keyring(node.root / "etc/torcx-tectonic/keyring.asc")


@case("keyring-directory", InputError, KEYRING, "is a directory; expected an OpenPGP keyring")
def _keyring_directory(node: Node) -> Thunk:
    (node.root / "etc/torcx-tectonic/keyring.asc").mkdir(parents=True)
    return lambda: signature.load_keyring(node.root / "etc/torcx-tectonic/keyring.asc")


@case("signature-empty", VerificationError, "manifest (https://b/m.json)", "the signature is empty")
def _signature_empty(node: Node) -> Thunk:
    return lambda: signature.verify_detached(b"data", b" \n", node.root / "keyring.gpg", "manifest (https://b/m.json)")


# --- runtime mappings ------------------------------------------------------------------------------------

MAPPINGS_FILE = "{root}/etc/kubernetes/installer/runtime-mappings.yaml"


def _mappings(node: Node, text: str | bytes) -> Thunk:
    path = node.file("etc/kubernetes/installer/runtime-mappings.yaml", text)
    return lambda: mappings.load_mappings(path)


def _k8s(body: str) -> str:
    return f"kind: VersionManifestV1\nversions:\n  k8s:\n{body}"


ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
table(InputError, _mappings, [
    ("mappings-alias-bomb", ALIAS_BOMB, MAPPINGS_FILE + ":1", "anchors and aliases (& and *) are not allowed"),
    ("mappings-duplicate-minor", _k8s("    1.8: {docker: [17.03]}\n    1.8: {docker: [1.12]}\n"),
     MAPPINGS_FILE + ":5", "key '1.8' appears twice (lines 4 and 5)"),
    ("mappings-quoted-and-unquoted", _k8s("    1.8: {docker: [17.03]}\n    '1.8': {docker: [1.12]}\n"),
     MAPPINGS_FILE + ":5", "appears twice"),
    ("mappings-entry-list", _k8s("    1.8: [docker]\n"), MAPPINGS_FILE,
     "versions.k8s.1.8 is a list; expected a mapping"),
    ("mappings-entry-null", _k8s("    1.8:\n"), MAPPINGS_FILE, "versions.k8s.1.8 is None; expected a mapping"),
    ("mappings-runtime-string", _k8s("    1.8: {docker: 17.03}\n"), MAPPINGS_FILE,
     "versions.k8s.1.8.docker is '17.03'; expected a list of versions"),
    ("mappings-runtime-nested", _k8s("    1.8: {docker: [[17.03]]}\n"), MAPPINGS_FILE,
     "versions.k8s.1.8.docker entry a list is not allowed; expected letters"),
    ("mappings-version-traversal", _k8s("    1.8: {docker: [../../x]}\n"), MAPPINGS_FILE,
     "entry '../../x' is not allowed"),
    ("mappings-key-not-minor", _k8s("    1: {docker: [17.03]}\n"), MAPPINGS_FILE,
     "versions.k8s key '1' is not allowed; expected a \"major.minor\" version"),
    ("mappings-key-three-parts", _k8s("    1.8.4: {docker: [17.03]}\n"), MAPPINGS_FILE, "key '1.8.4' is not allowed"),
    ("mappings-kind", "kind: VersionManifestV2\nversions: {k8s: {}}\n", MAPPINGS_FILE,
     "kind is 'VersionManifestV2'; expected 'VersionManifestV1'"),
    ("mappings-no-k8s", "kind: VersionManifestV1\n", MAPPINGS_FILE, "expected versions.k8s to map"),
    ("mappings-list", "- a\n", MAPPINGS_FILE, "expected a mapping with kind: VersionManifestV1"),
    ("mappings-tab", "kind: VersionManifestV1\n\tversions: 1\n", MAPPINGS_FILE + ":2", "not valid YAML"),
    ("mappings-deep", "[" * 5000, MAPPINGS_FILE, "YAML nested too deeply"),
    ("mappings-python-tag", "kind: !!python/object/apply:os.system [id]\n", MAPPINGS_FILE + ":1",
     "could not determine a constructor"),
    ("mappings-binary", b"kind: \xff\xfe\n", MAPPINGS_FILE, "not UTF-8 text (byte 0xff at offset 6)"),
])


# --- the configuration: a bad value for every key, and bad files ----------------------------------------

BAD_VALUES = {
    ("torcx", "manifest_url"): ("ftp://x/{{.OSVersion}}", "expected an http(s) URL template"),
    ("torcx", "verify_signatures"): ("maybe", "expected one of yes, true, on, 1, no, false, off, 0"),
    ("torcx", "keyring"): ("keyring.gpg", "expected an absolute path"),
    ("torcx", "profile"): ("../etc", "expected letters, digits, '.', '_', '+', '-' without '/' or '..'"),
    ("torcx", "addon"): ("a/b", "expected letters, digits"),
    ("torcx", "addon_mirror"): ("file:///srv/../etc", "its path has a segment '..'; expected a file:// URL"),
    ("kubernetes", "kubeconfig"): ("relative", "expected an absolute path"),
    ("kubernetes", "force_version"): ("latest", "expected a Kubernetes version like v1.8.4+coreos.0"),
    ("kubernetes", "kubelet_env"): ("etc/kubelet.env", "expected an absolute path"),
    ("kubernetes", "installer_kubelet_env"): ("~/kubelet.env", "expected an absolute path"),
    ("kubernetes", "runtime_mappings"): ("/" + "x" * 5000, "expected an absolute path without spaces"),
    ("kubernetes", "node_name"): ("../namespaces/kube-system/configmaps/x", "expected a DNS-1123 subdomain"),
    ("kubernetes", "annotation"): ("no-prefix", "expected PREFIX/NAME"),
    ("kubernetes", "label_timeout"): ("1e308", "expected seconds more than 0 and at most 86400"),
    ("kubernetes", "label_poll_max_interval"): ("0", "expected seconds more than 0 and at most 3600"),
    ("kubernetes", "node_labels"): ("labels", "expected one of yes, true"),
    ("bootstrap", "upgrade_os"): ("sometimes", "expected one of yes, true"),
    ("bootstrap", "skip_torcx"): ("2", "expected one of yes, true"),
    ("bootstrap", "reboot"): ("", "expected one of yes, true"),
    ("bootstrap", "os_update_failure"): ("retry", "expected one of continue, fail"),
    ("bootstrap", "os_update_attempts"): ("1026", "expected a whole number from 1 to 100"),
    ("bootstrap", "os_update_timeout"): ("inf", "expected seconds more than 0 and at most 86400"),
    ("network", "connect_timeout"): ("nan", "expected seconds more than 0 and at most 600"),
    ("network", "read_timeout"): ("-1", "expected seconds more than 0 and at most 3600"),
    ("network", "retries"): ("9" * 400, "expected a whole number from 0 to 100"),
    ("network", "backoff_factor"): ("1e3", "expected a number more than 0 and at most 60"),
    ("network", "ca_bundle"): ("ca.pem", "expected an absolute path"),
    ("network", "proxy"): ("http://proxy:3128 ExecStartPre=/bin/sh", "expected a proxy URL like http://"),
    ("network", "no_proxy"): ("10.3.0.1, .cluster.local", "expected host names, domains (.example.com)"),
    ("metrics", "textfile_dir"): ("/var/lib/node exporter", "expected an absolute path without spaces"),
    ("runtime", "backend"): ("rkt", "expected one of torcx, sysext"),
    ("runtime", "pin"): ("v17.03", "expected a runtime version like 17.03 or 24.0.9"),
    ("sysext", "runtime"): ("podman", "expected one of docker, containerd"),
    ("sysext", "images_url"): ("https://m/{{.Name}}-latest.raw", "expected the placeholder {{.Version}}"),
    ("sysext", "checksums_url"): ("ftp://m/SHA256SUMS", "expected an https://, http:// or file:// URL (or nothing)"),
    ("sysext", "verify_signatures"): ("perhaps", "expected one of yes, true"),
    ("sysext", "keyring"): ("keys.gpg", "expected an absolute path"),
    ("sysext", "keep"): ("0", "expected a whole number from 1 to 20"),
    ("sysext", "mask_builtin"): ("maybe", "expected one of yes, true"),
    ("sysext", "kubernetes"): ("sometimes", "expected one of yes, true"),
    ("sysext", "activate"): ("reboot", "expected one of next-boot, refresh"),
    ("units", "retry_delay"): ("601", "expected seconds more than 0 and at most 600"),
    ("units", "retry_attempts"): ("0x10", "expected a whole number from 1 to 100"),
    ("units", "backoff_delay"): ("-5", "expected seconds more than 0 and at most 86400"),
    ("units", "backoff_max_delay"): ("1h", "expected seconds more than 0 and at most 86400"),
}


def _config(node: Node, text: str | bytes) -> Thunk:
    main = node.file("etc/torcx-tectonic/torcx-tectonic.conf", "[torcx]\nprofile = tectonic\n")
    node.file("etc/torcx-tectonic/conf.d/20-x.conf", text)
    return lambda: config.load(main, node.root / "etc/torcx-tectonic/conf.d")


DROPIN = "{root}/etc/torcx-tectonic/conf.d/20-x.conf"
table(ConfigError, _config, [
    (f"config-{section}-{key}", f"# c\n[{section}]\n{key} = {value}\n", f"{DROPIN}:3: [{section}] {key} = ", expected)
    for (section, key), (value, expected) in BAD_VALUES.items()
])
table(ConfigError, _config, [
    ("config-not-utf8", b"[torcx]\nprofile = \xe9\n", DROPIN, "not UTF-8 text (byte 0xe9 at offset 18)"),
    ("config-nul", "[torcx]\nprofile = a\x00b\n", DROPIN, "contains a NUL byte at offset 19"),
    ("config-duplicate-key", "[network]\nretries = 1\nretries = 2\n", DROPIN + ":3",
     "'retries' is set again (first on line 2); expected each key once per file"),
    ("config-unknown-section", "[docker]\nversion = 1\n", DROPIN + ":2", "allowed: torcx, kubernetes, bootstrap"),
    ("config-unknown-key", "[torcx]\nprofle = x\n", DROPIN + ":2", "allowed: manifest_url, verify_signatures"),
    ("config-default-section", "[DEFAULT]\nprofile = x\n", DROPIN + ":2", "unknown section [DEFAULT]; allowed"),
    ("config-no-section", "profile = x\n", DROPIN, "not a valid INI file: File contains no section headers"),
    ("config-not-ini", "[torcx]\nno equals sign\n", DROPIN, "not a valid INI file"),
    ("config-continuation-injection", "[kubernetes]\nkubelet_env = /etc/x\n  ExecStartPre=/bin/sh\n", DROPIN + ":2",
     "expected one line without control characters"),
    ("config-huge-line", "[torcx]\n" + "x" * 200_000 + "\n", DROPIN, "not a valid INI file"),
    ("config-too-large", "[torcx]\n#" + "x" * (1 << 20) + "\n", DROPIN, "larger than 1048576 bytes"),
])


@case("config-main-directory", ConfigError, "{root}/etc/torcx-tectonic/torcx-tectonic.conf",
      "is a directory; expected an INI configuration file")
def _config_main_directory(node: Node) -> Thunk:
    (node.root / "etc/torcx-tectonic/torcx-tectonic.conf").mkdir(parents=True)
    return lambda: config.load(node.root / "etc/torcx-tectonic/torcx-tectonic.conf", node.root / "conf.d")


# --- kubeconfig -----------------------------------------------------------------------------------------

KUBECONFIG_FILE = "{root}/etc/kubernetes/kubeconfig"


def _kubeconfig_doc(cluster: dict[str, Any] | None = None, user: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://10.3.0.1:443", **(cluster or {})}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "abc"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    })


def _kubeconfig(node: Node, text: str | bytes) -> Thunk:
    path = node.file("etc/kubernetes/kubeconfig", text)
    return lambda: kube.load_kubeconfig(path)


table(InputError, _kubeconfig, [
    ("kubeconfig-insecure-string", _kubeconfig_doc({"insecure-skip-tls-verify": "false"}),
     KUBECONFIG_FILE + ": clusters[0].cluster.insecure-skip-tls-verify", "expected true or false (a YAML boolean)"),
    ("kubeconfig-server-http", _kubeconfig_doc({"server": "http://10.3.0.1"}),
     KUBECONFIG_FILE + ": clusters[0].cluster.server", "is not an https:// URL with a host"),
    ("kubeconfig-server-number", _kubeconfig_doc({"server": 443}), "clusters[0].cluster.server",
     "is the number 443; expected a string"),
    ("kubeconfig-ca-not-base64", _kubeconfig_doc({"certificate-authority-data": "@@"}),
     "clusters[0].cluster.certificate-authority-data", "is not valid base64"),
    ("kubeconfig-insecure-and-ca", _kubeconfig_doc({"insecure-skip-tls-verify": True,
                                                    "certificate-authority-data": "QQ=="}),
     KUBECONFIG_FILE + ": clusters[0].cluster", "expected one of them"),
    ("kubeconfig-token-newline", _kubeconfig_doc(user={"token": "a\nb"}), KUBECONFIG_FILE + ": users[0].user",
     "expected a bearer token of visible ASCII characters"),
    ("kubeconfig-token-list", _kubeconfig_doc(user={"token": ["a"]}), "users[0].user.token",
     "is a list; expected a string"),
    ("kubeconfig-no-credentials", _kubeconfig_doc(user={}), KUBECONFIG_FILE,
     "user has neither a client certificate nor a token"),
    ("kubeconfig-cert-without-key", _kubeconfig_doc(user={"client-certificate-data": "QQ=="}), KUBECONFIG_FILE,
     "needs both client-certificate and client-key"),
    ("kubeconfig-unknown-context", _kubeconfig_doc().replace("current-context: ctx", "current-context: other"),
     KUBECONFIG_FILE, "no context named 'other' in contexts"),
    ("kubeconfig-alias", "clusters: &c []\nusers: *c\n", KUBECONFIG_FILE + ":1", "anchors and aliases"),
    ("kubeconfig-duplicate-key", "kind: Config\nkind: Config\n", KUBECONFIG_FILE + ":2", "key 'kind' appears twice"),
    ("kubeconfig-list", "- a\n", KUBECONFIG_FILE, "expected a kubeconfig mapping (apiVersion: v1, kind: Config)"),
    ("kubeconfig-binary", b"\x80\x81", KUBECONFIG_FILE, "not UTF-8 text (byte 0x80 at offset 0)"),
    ("kubeconfig-contexts-mapping", "contexts: {}\ncurrent-context: x\n", KUBECONFIG_FILE + ": kubeconfig.contexts",
     "is a mapping; expected a list"),
])


@case("kubeconfig-token-file-directory", InputError, "{root}/etc/kubernetes",
      "is a directory; expected the tokenFile named in {root}/etc/kubernetes/kubeconfig")
def _kubeconfig_token_directory(node: Node) -> Thunk:
    path = node.file("etc/kubernetes/kubeconfig", _kubeconfig_doc(user={"tokenFile": "."}))
    return lambda: kube.load_kubeconfig(path)


@case("kubeconfig-ca-file-device", InputError, "/dev/zero",
      "is not a regular file; expected the certificate-authority named in")
def _kubeconfig_ca_device(node: Node) -> Thunk:
    path = node.file("etc/kubernetes/kubeconfig", _kubeconfig_doc({"certificate-authority": "/dev/zero"}))
    return lambda: kube.load_kubeconfig(path)


# --- os-release ------------------------------------------------------------------------------------------

OS_RELEASE_FILE = "{root}/usr/lib/os-release"


def _os_release(node: Node, text: str | bytes) -> Thunk:
    path = node.file("usr/lib/os-release", text)
    return lambda: osrelease.read_os_release(path)


table(InputError, _os_release, [
    ("os-release-v-prefix", "VERSION_ID=v1632.3.0\nCOREOS_BOARD=amd64-usr\n", OS_RELEASE_FILE + ": VERSION_ID",
     "OS version 'v1632.3.0' is not allowed; expected MAJOR.MINOR.PATCH"),
    ("os-release-leading-zero", "VERSION_ID=1632.03.0\nCOREOS_BOARD=amd64-usr\n", OS_RELEASE_FILE,
     "'1632.03.0' is not allowed; expected MAJOR.MINOR.PATCH"),
    ("os-release-trailing-space", 'VERSION_ID="1632.3.0 "\nCOREOS_BOARD=amd64-usr\n', OS_RELEASE_FILE,
     "'1632.3.0 ' is not allowed"),
    ("os-release-traversal", "VERSION_ID=../../x\nCOREOS_BOARD=amd64-usr\n", OS_RELEASE_FILE, "is not allowed"),
    ("os-release-board-traversal", "VERSION_ID=1632.3.0\nCOREOS_BOARD=../../x\n", OS_RELEASE_FILE,
     "COREOS_BOARD '../../x' is not allowed; expected lowercase letters"),
    ("os-release-no-version", "ID=coreos\n", OS_RELEASE_FILE, "VERSION_ID is missing; expected e.g."),
    ("os-release-garbage-line", "VERSION_ID=1632.3.0\nnot an assignment\n", OS_RELEASE_FILE + ":2",
     "expected KEY=value"),
    ("os-release-bad-quote", "VERSION_ID='1632.3.0\n", OS_RELEASE_FILE + ":1", "bad quoting in value"),
    ("os-release-binary", b"VERSION_ID=1632.3.0\n\xc0\n", OS_RELEASE_FILE, "not UTF-8 text"),
])


@case("os-release-directory", InputError, OS_RELEASE_FILE, "is a directory; expected an os-release file")
def _os_release_directory(node: Node) -> Thunk:
    (node.root / "usr/lib/os-release").mkdir(parents=True)
    return lambda: osrelease.read_os_release(node.root / "usr/lib/os-release")


# --- kubelet.env: the installer's template and the live file -----------------------------------------------

INSTALLER_ENV = "{root}/etc/kubernetes/installer/kubelet.env"
LIVE_ENV = "{root}/etc/kubernetes/kubelet.env"


def _installer_env(node: Node, text: str | bytes) -> Thunk:
    path = node.file("etc/kubernetes/installer/kubelet.env", text)
    return lambda: kubeletenv.with_version(path, "v1.8.4+coreos.0")


def _live_env(node: Node, text: str | bytes) -> Thunk:
    path = node.file("etc/kubernetes/kubelet.env", text)
    return lambda: kubeletenv.kubelet_version(path)


table(InputError, _installer_env, [
    ("installer-env-garbage", "KUBELET_IMAGE_URL=x\ngarbage\n", INSTALLER_ENV + ":2", "expected KEY=value"),
    ("installer-env-quote", "KUBELET_IMAGE_URL='x\n", INSTALLER_ENV + ":1", "bad quoting in value"),
    ("installer-env-binary", b"KUBELET_IMAGE_URL=\xff\n", INSTALLER_ENV, "not UTF-8 text (byte 0xff"),
    ("installer-env-nul", "A=\x00\n", INSTALLER_ENV, "contains a NUL byte"),
])
table(InputError, _live_env, [
    ("live-env-no-tag", "KUBELET_IMAGE_URL=x\n", LIVE_ENV, "KUBELET_IMAGE_TAG is missing or empty; expected e.g."),
    ("live-env-latest", "KUBELET_IMAGE_TAG=latest\n", LIVE_ENV,
     "KUBELET_IMAGE_TAG 'latest' is not allowed; expected a Kubernetes version tag"),
    ("live-env-traversal", "KUBELET_IMAGE_TAG=v1.8.4/../x\n", LIVE_ENV, "is not allowed"),
    ("live-env-garbage", "KUBELET_IMAGE_TAG=v1.8.4\n???\n", LIVE_ENV + ":2", "expected KEY=value"),
])


@case("installer-env-missing", InputError, INSTALLER_ENV, "missing; expected a kubelet environment file")
def _installer_env_missing(node: Node) -> Thunk:
    return lambda: kubeletenv.with_version(node.root / "etc/kubernetes/installer/kubelet.env", "v1.8.4")


@case("installer-env-version-newline", InputError, "kubelet.env", "expected a Kubernetes version like v1.8.4")
def _installer_env_bad_version(node: Node) -> Thunk:
    path = node.file("etc/kubernetes/installer/kubelet.env", "KUBELET_IMAGE_TAG=v1.7.0\n")
    return lambda: kubeletenv.with_version(path, "v1.8.4\nEVIL=1")


# --- torcx profiles and next-profile (select_image writes both when it succeeds) --------------------------


def _select(node: Node) -> Thunk:
    return lambda: profile.select_image(
        user_profiles=node.root / "etc/torcx/profiles", vendor_profiles=node.root / "usr/share/torcx/profiles",
        next_profile_file=node.root / "etc/torcx/next-profile", configured="tectonic", name="docker",
        reference="17.03")


def _user_profile(node: Node, text: str | bytes) -> Thunk:
    node.file("etc/torcx/next-profile", "custom\n")
    node.file("etc/torcx/profiles/custom.json", text)
    return _select(node)


def _next_profile(node: Node, text: str | bytes) -> Thunk:
    node.file("etc/torcx/next-profile", text)
    return _select(node)


PROFILE_FILE = "{root}/etc/torcx/profiles/custom.json"
NEXT_FILE = "{root}/etc/torcx/next-profile"
table(InputError, _user_profile, [
    ("profile-not-json", '{"kind": ', PROFILE_FILE + ":1", "not valid JSON"),
    ("profile-kind", '{"kind": "profile-manifest-v2", "value": {"images": []}}', PROFILE_FILE,
     "expected one of profile-manifest-v0, profile-manifest-v1"),
    ("profile-images-object", '{"kind": "profile-manifest-v0", "value": {"images": {}}}', PROFILE_FILE,
     "expected value.images to be a list"),
    ("profile-image-no-reference", '{"kind": "profile-manifest-v0", "value": {"images": [{"name": "d"}]}}',
     PROFILE_FILE + ": value.images[0]", "expected an object with string 'name' and 'reference'"),
    ("profile-remote-number",
     '{"kind": "profile-manifest-v1", "value": {"images": [{"name": "d", "reference": "1", "remote": 1}]}}',
     PROFILE_FILE + ": value.images[0]", "'remote' is 1; expected a string"),
    ("profile-duplicate-key", '{"kind": "profile-manifest-v0", "kind": "profile-manifest-v1"}', PROFILE_FILE,
     "key 'kind' appears twice"),
    ("profile-binary", b'{"kind": "\xff"}', PROFILE_FILE, "not UTF-8 text"),
])
table(InputError, _next_profile, [
    ("next-profile-traversal", "../../etc/passwd\n", NEXT_FILE, "profile name '../../etc/passwd' is not allowed"),
    ("next-profile-traversal-json", "../x.json\n", NEXT_FILE, "profile name '../x' is not allowed"),
    ("next-profile-space", "my profile\n", NEXT_FILE, "profile name 'my profile' is not allowed"),
    ("next-profile-binary", b"cust\xffom\n", NEXT_FILE, "not UTF-8 text (byte 0xff at offset 4)"),
    ("next-profile-huge", "x" * 5000, NEXT_FILE, "larger than 4096 bytes"),
])


@case("next-profile-directory", InputError, NEXT_FILE, "is a directory; expected the name of a torcx profile")
def _next_profile_directory(node: Node) -> Thunk:
    (node.root / "etc/torcx/next-profile").mkdir(parents=True)
    return _select(node)


@case("profile-directory", InputError, PROFILE_FILE, "is a directory; expected a torcx profile")
def _profile_directory(node: Node) -> Thunk:
    node.file("etc/torcx/next-profile", "custom\n")
    (node.root / "etc/torcx/profiles/custom.json").mkdir(parents=True)
    return _select(node)


# --- /run/metadata/torcx and the profile it names ----------------------------------------------------------

METADATA = "{root}/run/metadata/torcx"


def _metadata(node: Node, text: str | bytes) -> Thunk:
    path = node.file("run/metadata/torcx", text)
    return lambda: profile.booted_reference(path, "docker")


table(InputError, _metadata, [
    ("metadata-garbage", 'TORCX_BINDIR="/run/torcx/bin"\nnope\n', METADATA + ":2", "expected KEY=value"),
    ("metadata-relative-profile", "TORCX_PROFILE_PATH=profile.json\n", METADATA,
     "TORCX_PROFILE_PATH 'profile.json' is not an absolute path"),
    ("metadata-bad-quote", 'TORCX_PROFILE_PATH="/run/x\n', METADATA + ":1", "bad quoting in value"),
    ("metadata-binary", b"TORCX_PROFILE_PATH=/\xfe\n", METADATA, "not UTF-8 text"),
    ("metadata-profile-is-dir", "TORCX_PROFILE_PATH=/\n", "/: is a directory",
     "expected the profile torcx applied at boot"),
])


@case("metadata-applied-profile-malformed", InputError, "{root}/run/torcx/profile.json:1", "not valid JSON")
def _metadata_applied_malformed(node: Node) -> Thunk:
    applied = node.file("run/torcx/profile.json", "{")
    path = node.file("run/metadata/torcx", f"TORCX_PROFILE_PATH={applied}\n")
    return lambda: profile.booted_reference(path, "docker")


# --- the Docker reset marker ---------------------------------------------------------------------------------

MARKER = "{root}/var/lib/torcx-tectonic/docker-reset-needed"


def _marker(node: Node, text: str | bytes) -> Thunk:
    marker = node.file("var/lib/torcx-tectonic/docker-reset-needed", text)
    node.file("var/lib/docker/containers/c1", "data")
    return lambda: dockerdata.reset(marker, node.root / "var/lib/docker", "17.03")


table(InputError, _marker, [
    ("reset-marker-not-json", "{", MARKER + ":1", 'expected a JSON object {"from": ..., "to": ...}'),
    ("reset-marker-list", '["17.03"]', MARKER, 'is a list; expected a JSON object {"from"'),
    ("reset-marker-binary", b"\xff", MARKER, "not UTF-8 text"),
])


# --- the release bucket over HTTP (a download would write into the store) ---------------------------------

MANIFEST_PATH = "/manifests/amd64-usr/1632.3.0/torcx_manifest.json"


def _bucket(node: Node, verify: str = "no") -> Bucket:
    return Bucket(make_config({
        "torcx.manifest_url": node.url + "/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
        "torcx.verify_signatures": verify, "torcx.keyring": str(node.root / "keyring.gpg"),
        "network.retries": "0", "network.connect_timeout": "1", "network.read_timeout": "2",
    }))


def _bucket_manifest(node: Node, answer: tuple[Any, ...]) -> Thunk:
    node.server.routes[MANIFEST_PATH] = answer

    def fetch() -> object:
        with _bucket(node) as bucket:
            return bucket.manifest("amd64-usr", "1632.3.0")
    return fetch


ADDON = b"addon bytes"


def _bucket_download(node: Node, answer: tuple[Any, ...]) -> Thunk:
    node.server.routes["/docker.tgz"] = answer
    target = node.root / "var/lib/torcx/store/1632.3.0"
    target.mkdir(parents=True)

    def install() -> object:
        with _bucket(node) as bucket:
            return store.install_addon(target, "docker", "17.03", sha512(ADDON),
                                       bucket.download(node.url + "/docker.tgz", "docker:17.03.torcx.tgz"), "bucket")
    return install


URL_MANIFEST = "{url}" + MANIFEST_PATH
table(NetworkError, _bucket_manifest, [
    ("bucket-403", (403, b"denied"), "GET " + URL_MANIFEST, "answered 403"),
    ("bucket-500", (500, b"oops"), URL_MANIFEST, "answered 500"),
    ("bucket-204", (204, b""), URL_MANIFEST, "answered 204"),
    ("bucket-content-length-words", (200, b"{}", {"Content-Length": "two", "Connection": "close"}), URL_MANIFEST,
     "answered Content-Length 'two'; expected a number of bytes"),
    ("bucket-content-length-too-large", (200, b"", {"Content-Length": str(1 << 30), "Connection": "close"}),
     URL_MANIFEST, "is larger than 8388608 bytes (Content-Length 1073741824)"),
])
table(InputError, _bucket_manifest, [
    ("bucket-manifest-html", (200, b"<html>not found</html>"), URL_MANIFEST + ":1", "not valid JSON"),
    ("bucket-manifest-binary", (200, b"\x89PNG\r\n"), URL_MANIFEST, "not UTF-8 text"),
    ("bucket-manifest-kind", (200, b'{"kind": "other"}'), URL_MANIFEST, "expected 'torcx-package-list-v0'"),
])
table(NetworkError, _bucket_download, [
    ("download-404", (404, b"gone"), "{url}/docker.tgz", "answered 404"),
    ("download-content-length", (200, ADDON, {"Content-Length": "1e3", "Connection": "close"}), "{url}/docker.tgz",
     "answered Content-Length '1e3'; expected a number of bytes"),
])
table(VerificationError, _bucket_download, [
    ("download-wrong-hash", (200, b"other bytes"), "bucket: sha512 mismatch for docker:17.03.torcx.tgz",
     "the manifest expects"),
])


@case("bucket-unsigned", VerificationError, URL_MANIFEST + ".asc does not exist",
      "expected a detached OpenPGP signature")
def _bucket_unsigned(node: Node) -> Thunk:
    node.server.routes[MANIFEST_PATH] = (200, _manifest_doc())

    def fetch() -> object:
        with _bucket(node, verify="yes") as bucket:
            return bucket.manifest("amd64-usr", "1632.3.0")
    return fetch


@case("bucket-board-traversal", InputError, "manifest URL: board '../../x'", "expected lowercase letters")
def _bucket_board(node: Node) -> Thunk:
    def fetch() -> object:
        with _bucket(node) as bucket:
            return bucket.manifest("../../x", "1632.3.0")
    return fetch


@case("bucket-ca-bundle-directory", InputError, "{root}", "is a directory; expected a PEM CA bundle")
def _bucket_ca_directory(node: Node) -> Thunk:
    return lambda: Bucket(make_config({"network.ca_bundle": str(node.root)}))


# --- the release bucket as a file:// mirror on the node (a missing file is its 404) ---------------------------

MIRROR = "{root}/srv/mirror"
MIRROR_MANIFEST = MIRROR + "/manifests/amd64-usr/1632.3.0/torcx_manifest.json"


def _mirror_bucket(node: Node, verify: str = "no") -> Bucket:
    return Bucket(make_config({
        "torcx.manifest_url": f"file://{node.root}/srv/mirror/manifests/{{{{.Board}}}}/{{{{.OSVersion}}}}/"
                              "torcx_manifest.json",
        "torcx.verify_signatures": verify, "torcx.keyring": str(node.root / "keyring.gpg"),
    }))


def _mirror_manifest(node: Node, prepare: Callable[[Path], object]) -> Thunk:
    prepare(node.root / MIRROR_MANIFEST.removeprefix("{root}/"))

    def fetch() -> object:
        with _mirror_bucket(node) as bucket:
            return bucket.manifest("amd64-usr", "1632.3.0")
    return fetch


def _write_to(data: bytes) -> Callable[[Path], object]:
    def write(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return write


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True)


def _make_link(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.symlink_to("/etc/hostname")


table(NetworkError, _mirror_manifest, [
    ("mirror-manifest-missing", lambda path: None, MIRROR_MANIFEST + " does not exist (file://" + MIRROR_MANIFEST,
     ")"),
    ("mirror-manifest-directory", _make_dir, MIRROR_MANIFEST, "is a directory (file://"),
    ("mirror-manifest-symlink", _make_link, MIRROR_MANIFEST, "is a symbolic link"),
    ("mirror-manifest-too-large", _write_to(b" " * ((8 << 20) + 1)), "file://" + MIRROR_MANIFEST,
     "is larger than 8388608 bytes"),
])
table(InputError, _mirror_manifest, [
    ("mirror-manifest-html", _write_to(b"<html>not found</html>"), "file://" + MIRROR_MANIFEST + ":1",
     "not valid JSON"),
    ("mirror-manifest-kind", _write_to(b'{"kind": "other"}'), "file://" + MIRROR_MANIFEST,
     "expected 'torcx-package-list-v0'"),
])


@case("mirror-unsigned", VerificationError, "file://" + MIRROR_MANIFEST + ".asc does not exist",
      "expected a detached OpenPGP signature")
def _mirror_unsigned(node: Node) -> Thunk:
    _write_to(_manifest_doc())(node.root / MIRROR_MANIFEST.removeprefix("{root}/"))

    def fetch() -> object:
        with _mirror_bucket(node, verify="yes") as bucket:
            return bucket.manifest("amd64-usr", "1632.3.0")
    return fetch


def _mirror_download(node: Node, prepare: Callable[[Path], object]) -> Thunk:
    prepare(node.root / "srv/mirror/docker.tgz")
    target = node.root / "var/lib/torcx/store/1632.3.0"
    target.mkdir(parents=True)

    def install() -> object:
        with _mirror_bucket(node) as bucket:
            return store.install_addon(target, "docker", "17.03", sha512(ADDON), bucket.download(
                f"file://{node.root}/srv/mirror/docker.tgz", "docker:17.03.torcx.tgz"), "mirror")
    return install


table(NetworkError, _mirror_download, [
    ("mirror-download-missing", lambda path: None, "docker:17.03.torcx.tgz: " + MIRROR + "/docker.tgz",
     "does not exist"),
    ("mirror-download-directory", _make_dir, MIRROR + "/docker.tgz", "is a directory"),
    ("mirror-download-symlink", _make_link, MIRROR + "/docker.tgz", "is a symbolic link"),
])
table(VerificationError, _mirror_download, [
    ("mirror-download-wrong-hash", _write_to(b"other bytes"), "mirror: sha512 mismatch for docker:17.03.torcx.tgz",
     "nothing was stored"),
])


@case("mirror-download-traversal", InputError, "'file:///srv/mirror/../../etc/shadow' is not allowed",
      "its path has a segment '..'")
def _mirror_traversal(node: Node) -> Thunk:
    def download() -> object:
        with _mirror_bucket(node) as bucket:
            return b"".join(bucket.download("file:///srv/mirror/../../etc/shadow", "docker:17.03.torcx.tgz"))
    return download


# --- the api-server over HTTP ----------------------------------------------------------------------------------


def _client(node: Node) -> kube.KubeClient:
    network = make_config({"network.retries": "0", "network.connect_timeout": "1", "network.read_timeout": "2"})
    creds = kube.Credentials(server=node.url, ca_pem=None, cert_pem=None, key_pem=None, token="t", insecure=False)
    return kube.KubeClient(creds, network.network)


def _api(path: str, call: Callable[[kube.KubeClient], object]) -> Callable[[Node, tuple[Any, ...]], Thunk]:
    def make(node: Node, answer: tuple[Any, ...]) -> Thunk:
        node.server.routes[path] = answer

        def run() -> object:
            with _client(node) as client:
                return call(client)
        return run
    return make


VERSION = _api("/version", lambda c: c.version())
NODE = _api("/api/v1/nodes/node-1", lambda c: c.node("node-1"))
CONFIGMAP = _api("/api/v1/namespaces/tectonic-system/configmaps/tectonic-torcx-runtime-mappings",
                 lambda c: c.configmap_value(mappings.MAPPINGS_NAMESPACE, mappings.MAPPINGS_CONFIGMAP,
                                             mappings.MAPPINGS_KEY))
table(NetworkError, VERSION, [
    ("api-401", (401, b'{"kind": "Status", "message": "Unauthorized"}'), "GET {url}/version",
     "answered 401: Unauthorized"),
    ("api-500-html", (500, b"<html>\n  down </html>"), "{url}/version", "answered 500: <html> down </html>"),
    ("api-not-json", (200, b"ok"), "{url}/version:1", "not valid JSON (Expecting value); expected a JSON answer"),
    ("api-no-git-version", (200, b'{"major": "1"}'), "{url}/version", "has no gitVersion"),
    ("api-git-version-number", (200, b'{"gitVersion": 1.8}'), "{url}/version", "has no gitVersion"),
    ("api-duplicate-key", (200, b'{"gitVersion": "v1.8.4", "gitVersion": "v1.9.0"}'), "{url}/version",
     "key 'gitVersion' appears twice"),
    ("api-content-length", (200, b"{}", {"Content-Length": "x", "Connection": "close"}), "{url}/version",
     "answered Content-Length 'x'"),
])
table(InputError, VERSION, [
    ("api-git-version-newline", (200, b'{"gitVersion": "v1.8.4\\n"}'), "api-server version: {url}/version",
     "gitVersion 'v1.8.4\\n' is not allowed; expected a Kubernetes version"),
    ("api-git-version-quote", (200, b'{"gitVersion": "v1.8.4\\"x"}'), "{url}/version", "expected a Kubernetes version"),
])
table(NetworkError, NODE, [
    ("api-node-404", (404, b'{"message": "nodes \\"node-1\\" not found"}'), "GET {url}/api/v1/nodes/node-1",
     "answered 404: nodes \"node-1\" not found"),
    ("api-node-list", (200, b"[]"), "node node-1", "the api-server answered no object"),
    ("api-node-labels-list", (200, b'{"metadata": {"labels": []}}'), "node node-1",
     "metadata.labels is a list; expected a mapping"),
])
table(NetworkError, CONFIGMAP, [
    ("api-configmap-data-string", (200, b'{"data": "x"}'), "ConfigMap tectonic-system/tectonic-torcx-runtime-mappings",
     "data is 'x'; expected a mapping of keys to text"),
    ("api-configmap-403", (403, b'{"message": "forbidden"}'), "{url}/api/v1/namespaces/tectonic-system",
     "answered 403: forbidden"),
])


@case("api-node-name-traversal", InputError, "kubernetes: node name '../namespaces/kube-system/configmaps/x'",
      "expected a DNS-1123 subdomain")
def _api_node_traversal(node: Node) -> Thunk:
    def run() -> object:
        with _client(node) as client:
            return client.annotate_node("../namespaces/kube-system/configmaps/x", {"a.b/c": "true"})
    return run


# --- the runtime pin: the node's annotation as the api-server answers it, or the key ------------------------------

PIN_KEY = "torcx-tectonic.io/pin-runtime"
PIN_MAPPINGS = 'kind: VersionManifestV1\nversions:\n  k8s:\n    "1.8":\n      docker: ["17.03", "1.12"]\n'


def _pin(node: Node, annotation: Any, configured: str = "") -> Thunk:
    """What the runtime step does with the pin before it chooses: read the
    node's annotation, then check it (or the key) against the mappings."""
    node.server.routes["/api/v1/nodes/node-1"] = (200, json.dumps(
        {"metadata": {"name": "node-1", "annotations": {PIN_KEY: annotation}}}).encode())
    listed = mappings.parse_mappings(PIN_MAPPINGS, "mappings.yaml")

    def run() -> object:
        with _client(node) as client:
            value = client.node_annotation("node-1", PIN_KEY)
        return strategy.resolve_pin(value, f"node node-1 annotation {PIN_KEY}", configured, "[runtime] pin",
                                    "docker", listed.by_minor, listed.source)
    return run


ANNOTATED = f"node node-1 annotation {PIN_KEY}: pin "
table(InputError, _pin, [
    ("pin-annotation-word", "latest", ANNOTATED + "'latest'", "expected a runtime version like 17.03"),
    ("pin-annotation-v", "v17.03", ANNOTATED + "'v17.03'", "expected a runtime version like 17.03"),
    ("pin-annotation-newline", "17.03\n", ANNOTATED + "'17.03\\n'", "expected a runtime version like 17.03"),
    ("pin-annotation-traversal", "17.03/../../x", ANNOTATED + "'17.03/../../x'", "expected a runtime version"),
    ("pin-annotation-never-listed", "1.10", ANNOTATED + "1.10",
     "names a docker version the runtime mappings never list for any Kubernetes minor (from mappings.yaml, which "
     "list 1.12, 17.03)"),
])
table(NetworkError, _pin, [
    ("pin-annotation-number", 1.12, "node node-1: metadata.annotations.torcx-tectonic.io/pin-runtime",
     "is 1.12; expected text"),
])


@case("pin-key-never-listed", InputError, "[runtime] pin: pin 18.09",
      "names a docker version the runtime mappings never list for any Kubernetes minor")
def _pin_key_never_listed(node: Node) -> Thunk:
    return _pin(node, None, configured="18.09")


# --- the suite ---------------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    """Every entry under ``root``: mode, mtime and content (a link's target).
    A directory counts by what it holds (a temporary file that came and went
    while a download was checked changes its mtime, not the node)."""
    entries: dict[str, tuple[int, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if path.is_symlink():
            content: bytes | str = str(path.readlink())
        elif path.is_dir():
            entries[str(path.relative_to(root))] = (info.st_mode, 0, "<dir>")
            continue
        else:
            content = path.read_bytes()
        entries[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    return entries


def fill(text: str, node: Node) -> str:
    return text.replace("{root}", str(node.root)).replace("{url}", node.url)


@pytest.fixture(scope="module")
def server() -> Iterator[RoutedServer]:
    with http_server() as running:
        yield running


def test_the_suite_is_large_and_every_case_is_named_once() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 120, len(ids)


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input(bad: Case, tmp_path: Path, server: RoutedServer) -> None:
    server.routes = {}
    node = Node(tmp_path / "node", server)
    node.root.mkdir()
    call = bad.setup(node)
    before = snapshot(node.root)
    with pytest.raises(TorcxTectonicError) as caught:
        call()
    message = str(caught.value)
    assert isinstance(caught.value, bad.error), message
    assert fill(bad.source, node) in message
    assert fill(bad.expected, node) in message
    assert "\n" not in message.replace("\\n", "")
    assert snapshot(node.root) == before


def test_every_configuration_key_has_a_bad_value_case() -> None:
    assert set(BAD_VALUES) == {(s.section, s.key) for s in config.SETTINGS}
