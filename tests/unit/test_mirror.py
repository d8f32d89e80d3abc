"""mirror: the `torcx-tectonic mirror` command copies, verified and
idempotently, what nodes of some OS versions and Kubernetes minors need from
a local HTTP bucket serving really signed manifests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from torcx_tectonic import config, mirroring
from torcx_tectonic.cluster.mappings import parse_mappings
from torcx_tectonic.commands import cli as command
from torcx_tectonic.commands import mirror
from torcx_tectonic.errors import InputError, NetworkError, VerificationError
from torcx_tectonic.torcx import mirror as torcx_mirror

from .helpers import Keys, RoutedServer, make_config, sha512

BOARD = "amd64-usr"
OLD, CURRENT, NEXT = "1632.3.0", "1688.5.3", "1745.7.0"
MAPPINGS = "kind: VersionManifestV1\nversions:\n  k8s:\n    1.8: {docker: [17.03, 1.12]}\n" \
           "    1.9: {docker: [17.06, 17.03]}\n"


def addon(version: str, os_version: str) -> bytes:
    return f"docker {version} built for {os_version} ".encode() * 100


@dataclass
class Upstream:
    """A bucket: signed manifests and the addons they list, over HTTP."""

    server: RoutedServer
    keys: Keys

    def release(self, os_version: str, versions: Sequence[str], *, vendor: Sequence[str] = (),
                same_as: str | None = None, signed: bool = True) -> bytes:
        """Publish a release; ``same_as``: its addons are that release's bytes."""
        entries = []
        for version in versions:
            data = addon(version, same_as or os_version)
            path = f"/addons/{BOARD}/{os_version}/docker:{version}.torcx.tgz"
            self.server.routes[path] = (200, data)
            locations: list[dict[str, str]] = [{"url": self.server.base + path}]
            if version in vendor:
                locations.insert(0, {"path": f"/usr/share/torcx/store/docker:{version}.torcx.tgz"})
            entries.append({"version": version, "hash": "sha512-" + sha512(data), "locations": locations})
        raw = json.dumps({"kind": "torcx-package-list-v0", "value": {"packages": [
            {"name": "docker", "versions": entries}]}}).encode()
        self.server.routes[self.manifest_path(os_version)] = (200, raw)
        if signed:
            self.server.routes[self.manifest_path(os_version) + ".asc"] = (200, self.keys.sign(raw))
        return raw

    @staticmethod
    def manifest_path(os_version: str) -> str:
        return f"/manifests/{BOARD}/{os_version}/torcx_manifest.json"

    @property
    def template(self) -> str:
        return self.server.base + "/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"

    def addon_requests(self) -> list[str]:
        return [r for r in self.server.requests if r.startswith("/addons/")]


@pytest.fixture
def upstream(bucket: RoutedServer, keys: Keys) -> Iterator[Upstream]:
    yield Upstream(bucket, keys)


#: The torcx mirror's lines for nodes, as the summary prints them.
NODE_LINES = torcx_mirror.node_configuration


def _config(upstream: Upstream, **values: str) -> config.Config:
    return make_config({"torcx.manifest_url": upstream.template, "torcx.keyring": str(upstream.keys.keyring),
                        "network.retries": "0", **values})


def _run(upstream: Upstream, root: Path, os_versions: Sequence[str] = (CURRENT, NEXT),
         kubernetes: Sequence[str] = ("1.8",), cfg: config.Config | None = None,
         **request: str) -> mirroring.Summary:
    lines: list[str] = []
    return mirror.run(cfg or _config(upstream),
                      mirroring.Request(root=root, board=BOARD, os_versions=tuple(os_versions),
                                     kubernetes=tuple(kubernetes), **request),
                      parse_mappings(MAPPINGS, "mappings.yaml"), lines.append)


def _files(root: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- what it copies ----------------------------------------------------------------------------------------------


def test_the_mirror_holds_signed_manifests_and_the_addons_nodes_need(upstream: Upstream, tmp_path: Path) -> None:
    current_raw = upstream.release(CURRENT, ["1.12", "17.03"])
    next_raw = upstream.release(NEXT, ["1.12", "17.03"], same_as=CURRENT)
    summary = _run(upstream, tmp_path / "m")
    root = tmp_path / "m"
    assert sorted(_files(root)) == [
        f"addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz",
        f"addons/{BOARD}/{NEXT}/docker:17.03.torcx.tgz",
        f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json",
        f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json.asc",
        f"manifests/{BOARD}/{NEXT}/torcx_manifest.json",
        f"manifests/{BOARD}/{NEXT}/torcx_manifest.json.asc",
    ]
    # byte for byte what the bucket signed: manifests are never rewritten
    assert (root / f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json").read_bytes() == current_raw
    assert (root / f"manifests/{BOARD}/{NEXT}/torcx_manifest.json").read_bytes() == next_raw
    asc = upstream.server.routes[Upstream.manifest_path(NEXT) + ".asc"][1]
    assert (root / f"manifests/{BOARD}/{NEXT}/torcx_manifest.json.asc").read_bytes() == asc
    first, second = (root / f"addons/{BOARD}/{v}/docker:17.03.torcx.tgz" for v in (CURRENT, NEXT))
    assert first.read_bytes() == addon("17.03", CURRENT) == second.read_bytes()
    # the same bytes for both OS versions: downloaded once, hard-linked
    assert first.stat().st_ino == second.stat().st_ino
    assert len(upstream.addon_requests()) == 1
    assert summary.complete and summary.plan.choices == (mirroring.Choice("1.8", "17.03", (CURRENT, NEXT)),)
    assert sorted(summary.artefacts.values()) == [("downloaded", len(addon("17.03", CURRENT))), ("linked", 0)]
    assert set(summary.documents.values()) == {"written"}


def test_a_second_run_downloads_and_rewrites_nothing(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"])
    upstream.release(NEXT, ["17.03"])
    _run(upstream, tmp_path)
    before, downloads = _files(tmp_path), len(upstream.addon_requests())
    summary = _run(upstream, tmp_path)
    assert _files(tmp_path) == before
    assert len(upstream.addon_requests()) == downloads == 2
    assert [a for a, _ in summary.artefacts.values()] == ["present", "present"]
    assert set(summary.documents.values()) == {"unchanged"}
    assert "0 downloaded, 0 bytes; 0 linked; 2 already there" in mirror.render(summary, None, "", NODE_LINES)


def test_a_changed_or_missing_file_in_the_mirror_is_fetched_again(upstream: Upstream, tmp_path: Path) -> None:
    raw = upstream.release(CURRENT, ["17.03"])
    _run(upstream, tmp_path, os_versions=[CURRENT])
    addon_file = tmp_path / f"addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz"
    addon_file.write_bytes(b"tampered")
    (tmp_path / f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json").write_bytes(b"{}")
    summary = _run(upstream, tmp_path, os_versions=[CURRENT])
    assert addon_file.read_bytes() == addon("17.03", CURRENT)
    assert (tmp_path / f"manifests/{BOARD}/{CURRENT}/torcx_manifest.json").read_bytes() == raw
    assert [action for action, _ in summary.artefacts.values()] == ["downloaded"]
    assert set(summary.documents.values()) == {"written"}


def test_the_versions_nodes_choose_in_every_pair_of_os_versions(upstream: Upstream, tmp_path: Path) -> None:
    # A node on CURRENT with NEXT pending picks from NEXT's manifest: only 1.12, which CURRENT has too.
    # A node on CURRENT with no update picks 17.03. Both go into CURRENT's mirror directory.
    upstream.release(CURRENT, ["1.12", "17.03"])
    upstream.release(NEXT, ["1.12"])
    summary = _run(upstream, tmp_path)
    assert summary.plan.choices == (mirroring.Choice("1.8", "17.03", (CURRENT,)),
                                    mirroring.Choice("1.8", "1.12", (CURRENT, NEXT)))
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.glob("addons/*/*/*")) == [
        f"addons/{BOARD}/{CURRENT}/docker:1.12.torcx.tgz", f"addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz",
        f"addons/{BOARD}/{NEXT}/docker:1.12.torcx.tgz"]


def test_choices_are_strategy_choose_over_every_pair() -> None:
    offered = {OLD: ("17.03",), CURRENT: ("17.03", "17.06"), NEXT: ("17.06",)}
    found, problems = torcx_mirror.choices("1.9", ("17.06", "17.03"), "m", [NEXT, OLD, CURRENT], offered, "docker")
    # (running, next): (OLD, -), (OLD, CURRENT), (CURRENT, -), (OLD, NEXT), (CURRENT, NEXT), (NEXT, -); a
    # running OS whose manifest lacks the version the next one chose keeps what it has
    assert [(c.version, c.os_versions) for c in found] == [
        ("17.03", (OLD,)), ("17.06", (CURRENT,)), ("17.06", (CURRENT,)), ("17.06", (NEXT,)),
        ("17.06", (NEXT, CURRENT)), ("17.06", (NEXT,))]
    assert problems == []
    _, problems = torcx_mirror.choices("1.9", ("18.06",), "m", [OLD, CURRENT], offered, "docker")
    assert problems == [
        "no docker version for Kubernetes 1.9: the mappings from m accept 18.06, the manifest for OS 1632.3.0 "
        "offers 17.03",
        "no docker version for Kubernetes 1.9: the mappings from m accept 18.06, the manifest for OS 1688.5.3 "
        "offers 17.03, 17.06"]


def test_several_kubernetes_minors(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03", "17.06"])
    summary = _run(upstream, tmp_path, os_versions=[CURRENT], kubernetes=["1.8", "v1.9.3+coreos.0"])
    assert summary.plan.choices == (mirroring.Choice("1.8", "17.03", (CURRENT,)),
                                    mirroring.Choice("v1.9.3+coreos.0", "17.06", (CURRENT,)))
    assert len(list(tmp_path.glob("addons/*/*/*"))) == 2
    assert "  Kubernetes 1.9: 17.06 for OS 1688.5.3" in mirror.render(summary, None, "", NODE_LINES)


def test_what_nodes_need_but_the_bucket_lacks_makes_the_mirror_incomplete(upstream: Upstream,
                                                                         tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"])
    summary = _run(upstream, tmp_path, os_versions=[CURRENT], kubernetes=["1.8", "1.10"])
    assert not summary.complete
    assert summary.plan.problems == (
        "Kubernetes 1.10 (minor 1.10) has no docker versions in the runtime mappings from mappings.yaml; mapped "
        "minors: 1.8, 1.9",)
    assert (tmp_path / f"addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz").is_file()  # the rest is there
    text = mirror.render(summary, None, "", NODE_LINES)
    assert text.startswith(f"mirror {tmp_path} from {upstream.template}: INCOMPLETE\n")
    assert "  PROBLEM: Kubernetes 1.10 (minor 1.10) has no docker versions" in text


def test_an_addon_the_os_image_ships_is_not_copied(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"], vendor=["17.03"])
    summary = _run(upstream, tmp_path, os_versions=[CURRENT])
    assert summary.plan.artefacts == () and summary.complete
    assert summary.plan.skipped == (
        f"docker:17.03.torcx.tgz for OS {CURRENT}: ships in the OS image (/usr/share/torcx/store/"
        "docker:17.03.torcx.tgz)",)
    assert upstream.addon_requests() == []


def test_os_versions_before_remote_addons_need_nothing(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"])
    summary = _run(upstream, tmp_path, os_versions=["1465.8.0", CURRENT])
    assert summary.complete and [d.what for d in summary.plan.documents] == [f"manifest for {BOARD} {CURRENT}"]
    assert not any("1465.8.0" in r for r in upstream.server.requests)


def test_a_custom_manifest_path(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"])
    _run(upstream, tmp_path, os_versions=[CURRENT], manifest_path="torcx/{{.OSVersion}}/{{.Board}}.json")
    assert (tmp_path / f"torcx/{CURRENT}/{BOARD}.json").is_file()
    assert (tmp_path / f"torcx/{CURRENT}/{BOARD}.json.asc").is_file()


# --- what it refuses ---------------------------------------------------------------------------------------------


def test_an_addon_with_the_wrong_hash_is_not_written_nor_are_the_manifests(upstream: Upstream,
                                                                           tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"])
    upstream.server.routes[f"/addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz"] = (200, b"another docker")
    with pytest.raises(VerificationError) as caught:
        _run(upstream, tmp_path, os_versions=[CURRENT])
    assert "sha512 mismatch for docker:17.03.torcx.tgz" in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert _files(tmp_path) == {}


@pytest.mark.parametrize("how", ["unsigned", "other-key", "tampered"])
def test_a_manifest_that_does_not_verify_is_not_mirrored(upstream: Upstream, tmp_path: Path, how: str) -> None:
    raw = upstream.release(CURRENT, ["17.03"], signed=how != "unsigned")
    if how == "other-key":
        upstream.server.routes[Upstream.manifest_path(CURRENT) + ".asc"] = (200, upstream.keys.sign(raw, "other"))
    if how == "tampered":
        upstream.server.routes[Upstream.manifest_path(CURRENT)] = (200, raw.replace(b"17.03", b"17.09"))
    expected = {"unsigned": "is not signed", "other-key": "signed by a key not in the keyring",
                "tampered": "bad signature"}[how]
    with pytest.raises(VerificationError, match=expected):
        _run(upstream, tmp_path / "m", os_versions=[CURRENT])
    assert not (tmp_path / "m").exists()
    assert upstream.addon_requests() == []


def test_the_mirror_verifies_even_when_nodes_are_told_not_to(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"], signed=False)
    with pytest.raises(VerificationError, match="is not signed"):
        _run(upstream, tmp_path, os_versions=[CURRENT], cfg=_config(upstream, **{"torcx.verify_signatures": "no"}))


def test_a_missing_release_names_its_url(upstream: Upstream, tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match=f"GET {upstream.server.base}/manifests/{BOARD}/{CURRENT}/"
                                           "torcx_manifest.json answered 404"):
        _run(upstream, tmp_path, os_versions=[CURRENT])


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("board", "../x", "board '../x' is not allowed"),
    ("os_versions", ("3760.2",), "OS version '3760.2' is not allowed"),
    ("kubernetes", ("latest",), "version 'latest' is not allowed"),
    ("kubernetes", (), "expected at least one Kubernetes version"),
    ("manifest_path", "/abs/{{.OSVersion}}.json", "it is absolute"),
    ("manifest_path", "m/{{.Board}}.json", "it has no {{.OSVersion}}"),
    ("manifest_path", "../{{.OSVersion}}.json", "its path has a segment '..'"),
])
def test_a_request_is_checked_before_anything_is_fetched(tmp_path: Path, field: str, value: object,
                                                         expected: str) -> None:
    fields: dict[str, object] = {"root": tmp_path, "board": BOARD, "os_versions": (CURRENT,), "kubernetes": ("1.8",)}
    with pytest.raises(InputError, match=expected.replace("{", r"\{").replace(".", r"\.")):
        mirroring.Request(**{**fields, field: value})  # type: ignore[arg-type]


# --- from another mirror (a disk carried in, copied to /srv) ---------------------------------------------------


def test_a_mirror_can_be_copied_from_a_mirror_without_the_bucket(upstream: Upstream, tmp_path: Path) -> None:
    upstream.release(CURRENT, ["17.03"])
    _run(upstream, tmp_path / "usb", os_versions=[CURRENT])
    upstream.server.routes.clear()  # the bucket is gone
    cfg = _config(upstream, **{"torcx.manifest_url": f"file://{tmp_path}/usb/{mirroring.DEFAULT_MANIFEST_PATH}"})
    summary = _run(upstream, tmp_path / "srv", os_versions=[CURRENT], cfg=cfg,
                   addon_source=f"file://{tmp_path}/usb/addons")
    assert summary.complete
    assert {k: v[0] for k, v in _files(tmp_path / "srv").items()} == {
        k: v[0] for k, v in _files(tmp_path / "usb").items()}


# --- what the operator reads -------------------------------------------------------------------------------------


def test_the_configuration_printed_for_the_nodes_is_valid_configuration() -> None:
    text = torcx_mirror.node_configuration("file:///srv/mirror")
    assert text == ("[torcx]\nmanifest_url = file:///srv/mirror/manifests/{{.Board}}/{{.OSVersion}}/"
                    "torcx_manifest.json\naddon_mirror = file:///srv/mirror/addons\n")
    parsed = config.build(config.collect([("printed", text)]))
    assert parsed.torcx.addon_mirror == "file:///srv/mirror/addons"
    https = torcx_mirror.node_configuration("https://mirror.example/torcx", "t/{{.OSVersion}}.json")
    assert "manifest_url = https://mirror.example/torcx/t/{{.OSVersion}}.json\n" in https


@pytest.mark.parametrize(("root", "given", "expected_base", "note"), [
    (Path("/srv/mirror"), None, "file:///srv/mirror", ""),
    (Path("/srv/mirror"), "https://mirror.example/t/", "https://mirror.example/t", ""),
    (Path("/home/ops/mirror"), None, None, "the units cannot see /home"),
    (Path("/tmp/m"), "file:///media/usb", "file:///media/usb", ""),
    (Path("/srv/my mirror"), None, None, "its path is not one a file:// URL may name"),
])
def test_where_nodes_see_the_mirror(root: Path, given: str | None, expected_base: str | None, note: str) -> None:
    base, text = mirror.served_at(root, given)
    assert base == expected_base
    assert note in text and (text == "") == (note == "")
    if text:
        assert "run again with --served-at file:///srv/mirror" in text


# --- the command ---------------------------------------------------------------------------------------------------


def _conf(upstream: Upstream, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "mirror.conf"
    path.write_text(f"[torcx]\nkeyring = {upstream.keys.keyring}\n{extra}[network]\nretries = 0\n")
    return path


def _command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = command.main(["mirror", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_builds_the_mirror_and_prints_the_nodes_configuration(
        upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upstream.release(CURRENT, ["17.03"])
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    argv = ("--to", str(tmp_path / "m"), "--from", upstream.template, "--os-version", CURRENT, "--kubernetes", "1.8",
            "--mappings", str(tmp_path / "mappings.yaml"), "--config", str(_conf(upstream, tmp_path)),
            "--served-at", "file:///srv/mirror")
    code, out, err = _command(capsys, *argv)
    assert (code, err) == (0, "")
    assert f"  downloaded  addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz (" in out
    assert f"mirror {tmp_path / 'm'} from {upstream.template}: complete\n" in out
    assert "  Kubernetes 1.8: 17.03 for OS 1688.5.3\n" in out
    assert out.endswith("Nodes that see this directory at file:///srv/mirror use it with:\n\n[torcx]\n"
                        "manifest_url = file:///srv/mirror/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json\n"
                        "addon_mirror = file:///srv/mirror/addons\n")
    code, out, _ = _command(capsys, *argv)
    assert code == 0 and f"  present     addons/{BOARD}/{CURRENT}/docker:17.03.torcx.tgz" in out


def test_the_command_without_a_bucket_names_the_key(upstream: Upstream, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _command(capsys, "--to", str(tmp_path / "m"), "--os-version", CURRENT, "--kubernetes", "1.8",
                              "--config", str(_conf(upstream, tmp_path)))
    assert code == 1 and out == ""
    assert err.startswith("torcx-tectonic mirror: [torcx] manifest_url is not set")


def test_the_command_exits_1_on_an_incomplete_mirror_or_an_error(upstream: Upstream, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    upstream.release(CURRENT, ["17.03"])
    (tmp_path / "mappings.yaml").write_text(MAPPINGS)
    conf = _conf(upstream, tmp_path, f"manifest_url = {upstream.template}\n")
    base = ("--to", str(tmp_path / "m"), "--os-version", CURRENT, "--config", str(conf))
    code, out, _ = _command(capsys, *base, "--kubernetes", "1.7", "--mappings", str(tmp_path / "mappings.yaml"))
    assert code == 1 and "INCOMPLETE" in out and "PROBLEM: Kubernetes 1.7 (minor 1.7) has no docker" in out
    code, out, err = _command(capsys, *base, "--kubernetes", "1.8", "--mappings", str(tmp_path / "gone.yaml"))
    assert (code, err) == (1, f"torcx-tectonic mirror: {tmp_path / 'gone.yaml'}: missing; expected runtime mappings "
                              "(--mappings)\n")


@pytest.mark.parametrize(("argv", "expected"), [
    (("--os-version", "v1632.3.0"), "OS version 'v1632.3.0' is not allowed"),
    (("--kubernetes", "latest"), "Kubernetes version 'latest' is not allowed"),
    (("--board", "../x"), "board '../x' is not allowed"),
    (("--from", "ftp://bucket/{{.OSVersion}}"), "mirror --from 'ftp://bucket/{{.OSVersion}}': expected an http(s)"),
    (("--from-addons", "file:///srv/../x"), "mirror --from-addons 'file:///srv/../x': its path has a segment"),
    (("--served-at", "ftp://mirror"), "mirror --served-at 'ftp://mirror': expected an http(s) URL template"),
    (("--manifest-path", "/m/{{.OSVersion}}"), "mirror --manifest-path '/m/{{.OSVersion}}': mirror: manifest path"),
])
def test_usage_errors_exit_2_before_anything_is_fetched(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        argv: Sequence[str], expected: str) -> None:
    options: Mapping[str, str] = {"--to": str(tmp_path / "m"), "--os-version": CURRENT, "--kubernetes": "1.8"}
    merged = {**options, argv[0]: argv[1]}
    with pytest.raises(SystemExit) as caught:
        command.main(["mirror", *(item for pair in merged.items() for item in pair)])
    assert caught.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


# --- a mirror of system extension images (the sysext backend) ---------------------------------------------

SYSEXT_MAPPINGS = "kind: VersionManifestV1\nversions:\n  k8s:\n    1.8: {docker: [24.0.9, 20.10.24]}\n" \
                  "    1.9: {docker: [25.0.3]}\n"


def _sysext_upstream(upstream: Upstream, versions: Sequence[str]) -> config.Config:
    """The bucket serves docker images and their signed SHA256SUMS; the configuration for the sysext backend."""
    lines = []
    for version in versions:
        data = f"squashfs of docker {version}".encode() * 50
        name = f"docker-{version}-x86-64.raw"
        upstream.server.routes[f"/sysext/{name}"] = (200, data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    sums = "".join(lines).encode()
    upstream.server.routes["/sysext/SHA256SUMS"] = (200, sums)
    upstream.server.routes["/sysext/SHA256SUMS.asc"] = (200, upstream.keys.sign(sums))
    return make_config({"runtime.backend": "sysext", "network.retries": "0",
                        "sysext.keyring": str(upstream.keys.keyring),
                        "sysext.images_url": upstream.server.base + "/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw"})


def test_a_sysext_mirror_carries_the_signed_list_and_the_images_the_minors_need(upstream: Upstream,
                                                                                tmp_path: Path) -> None:
    cfg = _sysext_upstream(upstream, ["20.10.24", "24.0.9", "25.0.3", "26.1.0"])
    request = mirroring.Request(root=tmp_path / "m", board=BOARD, os_versions=(), kubernetes=("1.8", "1.9"))
    lines: list[str] = []
    summary = mirror.run(cfg, request, parse_mappings(SYSEXT_MAPPINGS, "m"), lines.append)
    assert summary.complete
    assert sorted(p.name for p in (tmp_path / "m/sysext").iterdir()) == [
        "SHA256SUMS", "SHA256SUMS.asc", "docker-24.0.9-x86-64.raw", "docker-25.0.3-x86-64.raw"]
    assert (tmp_path / "m/sysext/SHA256SUMS").read_bytes() == upstream.server.routes["/sysext/SHA256SUMS"][1]
    text = mirror.render(summary, "file:///srv/mirror", "", mirror.mirroring(cfg).node_configuration)
    assert "images:     2 verified (2 downloaded" in text
    assert "[runtime]\nbackend = sysext\n[sysext]\nimages_url = file:///srv/mirror/sysext/{{.Name}}-{{.Version}}-" \
           "{{.Arch}}.raw" in text
    again = mirror.run(cfg, request, parse_mappings(SYSEXT_MAPPINGS, "m"), lines.append)
    assert {action for action, _ in again.artefacts.values()} == {"present"}


def test_a_sysext_mirror_summary_names_the_image_of_each_minor_and_no_os(upstream: Upstream,
                                                                          tmp_path: Path) -> None:
    """One image serves every OS version: the summary has no OS list to name."""
    cfg = _sysext_upstream(upstream, ["24.0.9", "25.0.3"])
    request = mirroring.Request(root=tmp_path / "m", board=BOARD, os_versions=(), kubernetes=("1.8", "1.9"))
    summary = mirror.run(cfg, request, parse_mappings(SYSEXT_MAPPINGS, "m"), lambda line: None)
    text = mirror.render(summary, None, "", mirror.mirroring(cfg).node_configuration)
    assert ("  Kubernetes 1.8: 24.0.9 (docker-24.0.9-x86-64.raw)\n"
            "  Kubernetes 1.9: 25.0.3 (docker-25.0.3-x86-64.raw)\n") in text
    assert "for OS" not in text


def test_a_sysext_mirror_refuses_an_unsigned_list(upstream: Upstream, tmp_path: Path) -> None:
    cfg = _sysext_upstream(upstream, ["24.0.9"])
    del upstream.server.routes["/sysext/SHA256SUMS.asc"]
    request = mirroring.Request(root=tmp_path / "m", board=BOARD, os_versions=(), kubernetes=("1.8",))
    with pytest.raises(VerificationError, match="is not signed"):
        mirror.run(cfg, request, parse_mappings(SYSEXT_MAPPINGS, "m"), lambda line: None)
    assert not (tmp_path / "m").exists()
