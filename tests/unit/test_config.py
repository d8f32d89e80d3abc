"""config: defaults, main file + drop-ins, every kind of bad file or value."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path, PurePosixPath

import pytest

from torcx_tectonic import config, generator
from torcx_tectonic.config import RawValue
from torcx_tectonic.errors import ConfigError, shown

from .helpers import make_config


def _raw(**values: str) -> dict[tuple[str, str], RawValue]:
    out: dict[tuple[str, str], RawValue] = {}
    for name, value in values.items():
        section, key = name.split("__")
        out[(section, key)] = RawValue(value, f"/etc/torcx-tectonic/conf.d/10-x.conf:{len(out) + 3}")
    return out


# --- defaults -------------------------------------------------------------------


def test_no_file_gives_the_defaults(tmp_path: Path) -> None:
    loaded = config.load(tmp_path / "missing.conf", tmp_path / "missing.d")
    assert loaded.sources == ()
    assert loaded.torcx == config.TorcxSettings(
        manifest_url="",  # no working default: the historic bucket is gone
        verify_signatures=True,
        keyring=Path("/etc/torcx-tectonic/keyring.gpg"),
        profile="tectonic",
        addon="docker",
        addon_mirror="",
    )
    assert loaded.kubernetes.kubeconfig == Path("/etc/kubernetes/kubeconfig")
    assert loaded.kubernetes.kubelet_env == Path("/etc/kubernetes/kubelet.env")
    assert loaded.kubernetes.installer_kubelet_env == Path("/etc/kubernetes/installer/kubelet.env")
    assert loaded.kubernetes.runtime_mappings == Path("/etc/kubernetes/installer/runtime-mappings.yaml")
    assert loaded.kubernetes.annotation == "container-linux-update.v1.coreos.com/tectonic-torcx-pre-hook-ok"
    assert loaded.bootstrap == config.BootstrapSettings(
        upgrade_os=True,
        skip_torcx=False,
        reboot=True,
        os_update_failure="continue",
        os_update_attempts=3,
        os_update_timeout=1800.0,
    )
    assert loaded.network == config.NetworkSettings(
        connect_timeout=10.0, read_timeout=60.0, retries=5, backoff_factor=1.0, ca_bundle=None, proxy="", no_proxy=""
    )
    assert loaded.units == config.UnitSettings(retry_delay=30.0, retry_attempts=5)


def _host_named(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = os.uname()
    monkeypatch.setattr("os.uname", lambda: os.uname_result((real.sysname, name, *real[2:])))


def test_empty_node_name_is_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    _host_named(monkeypatch, "worker-7")
    assert config.build({}).kubernetes.node_name == "worker-7"
    assert config.build(_raw(kubernetes__node_name="n")).kubernetes.node_name == "n"


def test_render_default_parses_back_to_the_defaults() -> None:
    text = config.render_default()
    assert config.build(config.collect([("default.conf", text)])) == config.build({})
    # every key is present, commented out: uncommenting all of them changes nothing either
    uncommented = re.sub(r"^#(\w+ = )", r"\1", text, flags=re.MULTILINE)
    raw = config.collect([("uncommented.conf", uncommented)])
    assert set(raw) == set(config.SETTINGS_BY_NAME)
    assert config.build(raw) == config.build({})


def test_render_default_documents_every_setting() -> None:
    text = config.render_default()
    for setting in config.SETTINGS:
        assert f"# {setting.doc}\n#{setting.key} = {setting.default}\n" in text


def test_the_committed_reference_is_what_the_table_renders() -> None:
    reference = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert reference.read_text() == config.render_reference(), \
        "docs/configuration.md is out of date: python3 -m torcx_tectonic.config > docs/configuration.md"


def test_the_reference_has_a_row_for_every_setting() -> None:
    text = config.render_reference()
    for section in config.SECTIONS:
        assert f"\n## [{section}]\n" in text
    for setting in config.SETTINGS:
        assert f"| `{setting.key}` | " in text
    assert "\\<board>" in text  # escaped, or markdown would read it as a tag


def test_no_manifest_url_is_an_error_naming_the_key_when_it_is_needed() -> None:
    with pytest.raises(ConfigError) as caught:
        config.require_manifest_url(config.build({}).torcx)
    message = str(caught.value)
    assert message.startswith("[torcx] manifest_url is not set (in /etc/torcx-tectonic/torcx-tectonic.conf or "
                              "/etc/torcx-tectonic/conf.d/*.conf) and has no default")
    assert "tectonic-torcx.release.core-os.net no longer exists" in message
    assert f"e.g. manifest_url = {config.MANIFEST_URL_EXAMPLE}" in message
    assert config.MIRROR_MANIFEST_URL_EXAMPLE in message
    set_url = make_config({"torcx.manifest_url": config.MANIFEST_URL_EXAMPLE}).torcx
    assert config.require_manifest_url(set_url) == config.MANIFEST_URL_EXAMPLE


def test_the_shipped_file_shows_examples_of_what_has_no_default() -> None:
    text = config.render_default()
    assert f"#manifest_url = \n# for example: manifest_url = {config.MANIFEST_URL_EXAMPLE}\n" in text
    assert f"#addon_mirror = \n# for example: addon_mirror = {config.MIRROR_ADDONS_EXAMPLE}\n" in text
    for example in (config.MANIFEST_URL_EXAMPLE, config.MIRROR_MANIFEST_URL_EXAMPLE):
        assert make_config({"torcx.manifest_url": example}).torcx.manifest_url == example
    assert make_config({"torcx.addon_mirror": config.MIRROR_ADDONS_EXAMPLE}).torcx.addon_mirror


# --- files --------------------------------------------------------------------------


def test_main_file_and_dropins_apply_in_lexical_order(tmp_path: Path) -> None:
    main, dropins = tmp_path / "torcx-tectonic.conf", tmp_path / "conf.d"
    dropins.mkdir()
    main.write_text("[torcx]\nprofile = from-main\naddon = podman\n[network]\nretries = 1\n")
    (dropins / "20-b.conf").write_text("[torcx]\nprofile = from-20\n")
    (dropins / "10-a.conf").write_text("[torcx]\nprofile = from-10\n[network]\nretries = 2\n")
    (dropins / "30-c.conf.disabled").write_text("[torcx]\nprofile = ignored\n")
    (dropins / "40-dir.conf").mkdir()
    loaded = config.load(main, dropins)
    assert loaded.torcx.profile == "from-20"
    assert loaded.torcx.addon == "podman"
    assert loaded.network.retries == 2
    assert loaded.sources == (main, dropins / "10-a.conf", dropins / "20-b.conf")


def test_dropins_without_main_file(tmp_path: Path) -> None:
    dropins = tmp_path / "conf.d"
    dropins.mkdir()
    (dropins / "50-x.conf").write_text("[bootstrap]\nupgrade_os = no\n")
    loaded = config.load(tmp_path / "missing.conf", dropins)
    assert loaded.bootstrap.upgrade_os is False
    assert loaded.sources == (dropins / "50-x.conf",)


def test_collect_later_document_wins_and_records_where() -> None:
    raw = config.collect([("a.conf", "[torcx]\nprofile = a\n"), ("b.conf", "\n[torcx]\n\nprofile = b\n")])
    assert raw == {("torcx", "profile"): RawValue("b", "b.conf:4")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[torcx]\nprofile = x\n[docker]\nversion = 1\n",
            "/etc/x.conf:4: unknown section 'docker'; allowed: torcx, kubernetes, bootstrap, network, units",
        ),
        ("[DEFAULT]\nprofile = x\n", "/etc/x.conf:2: unknown section [DEFAULT]; allowed: torcx,"),
        (
            "[torcx]\n# c\nprofle = x\n",
            "/etc/x.conf:3: unknown key 'profle' in [torcx]; allowed: manifest_url, verify_signatures, keyring, "
            "profile, addon",
        ),
        ("[torcx]\nProfile = x\n", "/etc/x.conf:2: unknown key 'Profile' in [torcx]"),
        ("profile = x\n", "/etc/x.conf: not a valid INI file: File contains no section headers"),
        ("[torcx]\nno equals sign\n", "/etc/x.conf: not a valid INI file: Source contains parsing errors: [line 2]"),
    ],
    ids=["unknown-section", "default-section", "unknown-key", "key-case", "no-section", "not-ini"],
)
def test_bad_files_name_file_line_and_what_is_allowed(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.collect([("/etc/x.conf", text)])
    assert expected in str(caught.value)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    main = tmp_path / "torcx-tectonic.conf"
    main.write_bytes(b"[torcx]\nprofile = \xff\xfe\n")
    with pytest.raises(ConfigError, match=f"{main}: not UTF-8 text \\(byte 0xff at offset 18\\)"):
        config.load(main, tmp_path / "conf.d")


def test_error_in_a_dropin_names_the_dropin_and_line(tmp_path: Path) -> None:
    main, dropins = tmp_path / "torcx-tectonic.conf", tmp_path / "conf.d"
    dropins.mkdir()
    main.write_text("[bootstrap]\nupgrade_os = yes\n")
    (dropins / "10-x.conf").write_text("[bootstrap]\n\nupgrade_os = sometimes\n")
    with pytest.raises(ConfigError) as caught:
        config.load(main, dropins)
    message = str(caught.value)
    assert message.startswith(f"{dropins / '10-x.conf'}:3: [bootstrap] upgrade_os = 'sometimes': ")
    assert "expected one of yes, true, on, 1, no, false, off, 0" in message


# --- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("torcx__verify_signatures", "maybe", "expected one of yes, true, on, 1, no, false, off, 0"),
        ("torcx__manifest_url", "ftp://x/{{.OSVersion}}", "expected an http(s) URL template"),
        ("torcx__manifest_url", "https://x/{{.Board}}/m.json", "expected the placeholder {{.OSVersion}}"),
        ("torcx__keyring", "keyring.gpg", "expected an absolute path"),
        ("torcx__profile", "../etc", "expected letters, digits, '.', '_', '+', '-' without '/' or '..'"),
        ("torcx__profile", "..", "expected letters, digits, '.', '_', '+', '-' without '/' or '..'"),
        ("torcx__profile", "my profile", "expected letters, digits"),
        ("torcx__profile", "", "expected letters, digits"),
        ("torcx__addon", "a/b", "expected letters, digits"),
        ("kubernetes__kubeconfig", "relative/kubeconfig", "expected an absolute path"),
        ("kubernetes__annotation", "no-prefix", "expected PREFIX/NAME, a DNS-1123 subdomain and a name of letters"),
        ("kubernetes__annotation", "prefix/", "expected PREFIX/NAME"),
        ("kubernetes__annotation", "Prefix.example/x", "expected PREFIX/NAME"),
        ("kubernetes__annotation", "p/" + "n" * 64, "expected PREFIX/NAME"),
        ("kubernetes__label_timeout", "0", "expected seconds more than 0 and at most 86400"),
        ("kubernetes__label_timeout", "-5", "expected seconds more than 0 and at most 86400"),
        ("kubernetes__label_timeout", "86401", "expected seconds more than 0 and at most 86400"),
        ("kubernetes__label_timeout", "1e308", "expected seconds more than 0 and at most 86400"),
        ("kubernetes__label_poll_max_interval", "nan", "expected seconds more than 0 and at most 3600"),
        ("kubernetes__label_timeout", "inf", "expected seconds more than 0"),
        ("units__retry_delay", "1e400", "expected seconds more than 0 and at most 600"),
        ("units__retry_delay", "1_0", "expected seconds more than 0"),
        ("bootstrap__os_update_failure", "retry", "expected one of continue, fail"),
        ("bootstrap__os_update_attempts", "2.5", "expected a whole number from 1 to 100"),
        ("bootstrap__os_update_attempts", "-1", "expected a whole number from 1 to 100"),
        ("bootstrap__os_update_attempts", "0", "expected a whole number from 1 to 100"),
        ("bootstrap__os_update_attempts", "+3", "expected a whole number from 1 to 100"),
        ("units__retry_attempts", "0", "expected a whole number from 1 to 100"),
        ("units__retry_attempts", "1026", "expected a whole number from 1 to 100"),
        ("network__retries", "9" * 400, "expected a whole number from 0 to 100"),
        ("network__retries", "\u0663", "expected a whole number from 0 to 100"),
        ("network__backoff_factor", "61", "expected a number more than 0 and at most 60"),
        ("network__connect_timeout", "ten", "expected seconds more than 0 and at most 600"),
        ("network__read_timeout", "3601", "expected seconds more than 0 and at most 3600"),
        ("kubernetes__node_name", "Worker-A", "expected a DNS-1123 subdomain"),
        ("kubernetes__node_name", "../namespaces/kube-system/configmaps/x", "expected a DNS-1123 subdomain"),
        ("kubernetes__force_version", "latest", "expected a Kubernetes version like v1.8.4+coreos.0 (or nothing)"),
        ("kubernetes__kubelet_env", "/etc/x\nExecStart=/bin/sh", "expected one line without control characters"),
        ("torcx__manifest_url", "https://x/{{.Board}}/{{.OSVersion}}/{{.Arch}}", "expected no placeholders but"),
        ("torcx__manifest_url", "https://x:port/{{.OSVersion}}", "expected an http(s) URL template"),
        ("torcx__manifest_url", "file:///srv/../m/{{.OSVersion}}.json", "its path has a segment '..'; expected a "
         "file:// URL of an absolute path"),
        ("torcx__manifest_url", "file://mirror/{{.OSVersion}}.json", "it names the host 'mirror'"),
        ("torcx__manifest_url", "file:///srv/m/{{.Board}}.json", "expected the placeholder {{.OSVersion}}"),
        ("torcx__manifest_url", "file:///srv/m/{{.OSVersion}}.json?x", "it holds '?'"),
        ("torcx__manifest_url", "file:srv/{{.OSVersion}}.json", "it does not begin with file://"),
        ("torcx__addon_mirror", "ftp://mirror/addons", "expected the https://, http:// or file:// URL of a mirror's "
         "addons directory"),
        ("torcx__addon_mirror", "https://mirror/addons?x=1", "without placeholders, query or fragment"),
        ("torcx__addon_mirror", "https://mirror/{{.OSVersion}}", "expected the https://, http:// or file:// URL"),
        ("torcx__addon_mirror", "file:///srv/mirror/../addons", "its path has a segment '..'"),
        ("torcx__addon_mirror", "file:///srv/mirror addons", "holds other characters"),
        ("network__ca_bundle", "ca.pem", "expected an absolute path"),
        ("units__retry_attempts", "many", "expected a whole number"),
    ],
)
def test_bad_values_name_origin_setting_and_what_is_expected(name: str, value: str, expected: str) -> None:
    section, key = name.split("__")
    with pytest.raises(ConfigError) as caught:
        config.build(_raw(**{name: value}))
    message = str(caught.value)
    assert message.startswith(f"/etc/torcx-tectonic/conf.d/10-x.conf:3: [{section}] {key} = {shown(value)}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("torcx.verify_signatures", "off", ("torcx", "verify_signatures"), False),
        ("torcx.verify_signatures", "TRUE", ("torcx", "verify_signatures"), True),
        ("bootstrap.skip_torcx", "1", ("bootstrap", "skip_torcx"), True),
        ("bootstrap.os_update_failure", "fail", ("bootstrap", "os_update_failure"), "fail"),
        ("bootstrap.os_update_attempts", "1", ("bootstrap", "os_update_attempts"), 1),
        ("network.backoff_factor", "0.5", ("network", "backoff_factor"), 0.5),
        ("network.ca_bundle", "/etc/ssl/bucket.pem", ("network", "ca_bundle"), Path("/etc/ssl/bucket.pem")),
        (
            "torcx.manifest_url",
            "http://bucket.local/{{.Board}}/{{.OSVersion}}/m.json",
            ("torcx", "manifest_url"),
            "http://bucket.local/{{.Board}}/{{.OSVersion}}/m.json",
        ),
        (
            "torcx.manifest_url",
            "file:///srv/mirror/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
            ("torcx", "manifest_url"),
            "file:///srv/mirror/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json",
        ),
        (
            "torcx.manifest_url",
            "file://localhost/media/usb/{{.OSVersion}}.json",
            ("torcx", "manifest_url"),
            "file://localhost/media/usb/{{.OSVersion}}.json",
        ),
        ("torcx.addon_mirror", "file:///srv/mirror/addons/", ("torcx", "addon_mirror"), "file:///srv/mirror/addons/"),
        ("torcx.addon_mirror", "https://mirror.example/torcx/addons", ("torcx", "addon_mirror"),
         "https://mirror.example/torcx/addons"),
        (
            "kubernetes.annotation",
            "flatcar-linux-update.v1.flatcar-linux.net/hook-ok",
            ("kubernetes", "annotation"),
            "flatcar-linux-update.v1.flatcar-linux.net/hook-ok",
        ),
        ("kubernetes.force_version", "v1.8.4+coreos.0", ("kubernetes", "force_version"), "v1.8.4+coreos.0"),
    ],
)
def test_good_values_parse(name: str, value: str, attribute: tuple[str, str], expected: object) -> None:
    loaded = make_config({name: value})
    assert getattr(getattr(loaded, attribute[0]), attribute[1]) == expected


def test_values_from_a_file_are_stripped_and_keep_case(tmp_path: Path) -> None:
    main = tmp_path / "torcx-tectonic.conf"
    main.write_text("[kubernetes]\nnode_name =   worker-a  \nforce_version=v1.8.4+coreos.0\n")
    loaded = config.load(main, tmp_path / "conf.d")
    assert loaded.kubernetes.node_name == "worker-a"
    assert loaded.kubernetes.force_version == "v1.8.4+coreos.0"


# --- strictness --------------------------------------------------------------------------------


def test_every_number_documents_its_range() -> None:
    for setting in config.SETTINGS:
        if isinstance(setting.parse, config.Number):
            assert setting.doc.endswith(f"({setting.parse.allowed})"), setting.key
            assert f"# {setting.doc}\n" in config.render_default()
    assert "# attempts of a network step before its unit fails" in config.render_default()
    assert "(a whole number from 1 to 100)" in config.render_default()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[network]\nretries = 1\nretries = 2\n", "/etc/x.conf:3: [network] 'retries' is set again (first on line 2)"),
        ("[network]\nretries = 1\n[torcx]\n[network]\nretries: 2\n", "/etc/x.conf:5: [network] 'retries' is set again"),
        ("[network]\nretries=1\n# retries = 2\nrem retries = 3\n", None),
    ],
    ids=["same-section", "section-reopened", "comments-do-not-count"],
)
def test_a_key_set_twice_in_one_file_is_refused(text: str, expected: str | None) -> None:
    if expected is None:
        assert config.collect([("/etc/x.conf", text)])[("network", "retries")].value == "1"
        return
    with pytest.raises(ConfigError) as caught:
        config.collect([("/etc/x.conf", text)])
    assert str(caught.value).startswith(expected)
    assert "expected each key once per file" in str(caught.value)


def test_a_key_in_two_files_is_an_override_not_a_duplicate() -> None:
    raw = config.collect([("a.conf", "[network]\nretries = 1\n"), ("b.conf", "[network]\nretries = 2\n")])
    assert raw[("network", "retries")] == RawValue("2", "b.conf:2")


def test_a_continued_value_cannot_smuggle_a_line_into_a_unit() -> None:
    raw = config.collect([("/etc/x.conf", "[kubernetes]\nkubelet_env = /etc/x\n  ExecStartPre=/bin/sh\n")])
    with pytest.raises(ConfigError) as caught:
        config.build(raw)
    assert str(caught.value) == (
        "/etc/x.conf:2: [kubernetes] kubelet_env = '/etc/x\\nExecStartPre=/bin/sh': expected one line without "
        "control characters"
    )


def test_a_directory_as_the_main_file_is_a_config_error(tmp_path: Path) -> None:
    main = tmp_path / "torcx-tectonic.conf"
    main.mkdir()
    with pytest.raises(ConfigError, match=f"{main}: is a directory; expected an INI configuration file"):
        config.load(main, tmp_path / "conf.d")


def test_huge_parser_complaints_are_cut(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.collect([("/etc/x.conf", "[torcx]\n" + "x" * 100_000 + "\n")])
    assert len(str(caught.value)) < 400


def test_the_host_name_default_is_lowercase_as_kubelet_names_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    _host_named(monkeypatch, "Worker-7.Example\n")
    assert config.build({}).kubernetes.node_name == "worker-7.example"


def test_the_host_name_is_what_gethostname_returns() -> None:
    assert config.host_name() == socket.gethostname()


def test_the_largest_numbers_allowed_still_make_units() -> None:
    """With every number at its maximum, what the generator and the steps
    compute from them stays finite (1026 attempts once overflowed a float)."""
    largest = make_config({f"{s.section}.{s.key}": f"{s.parse.maximum:g}" for s in config.SETTINGS
                           if isinstance(s.parse, config.Number)})
    assert largest.units.retry_attempts == 100
    assert max(config.retry_delays(largest.units)) == config.MAX_RETRY_DELAY_SECS
    assert "TimeoutStartSec=" in generator.render(largest).files["torcx-new-os-annotate.service"]


def test_sysext_images_may_come_from_a_file_mirror() -> None:
    template = "file:///srv/mirror/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw"
    parsed = make_config({"runtime.backend": "sysext", "sysext.images_url": template})
    assert parsed.sysext.images_url == template
    assert parsed.sysext.sums_url == "file:///srv/mirror/sysext/SHA256SUMS"


@pytest.mark.parametrize("written", ["/etc/k8s/kubelet.env", "/etc//k8s/./kubelet.env/", "//srv/x", "///srv/x",
                                     "/a/../b", "/", "/./", "/x/.", "/%h/x"])
def test_a_path_reads_as_pathlib_writes_it(written: str) -> None:
    # the generator writes the text into units, the steps open the Path: the same file
    loaded = config.build(_raw(kubernetes__kubelet_env=written))
    assert loaded.kubernetes.path_text("kubelet_env") == str(PurePosixPath(written))
    assert loaded.kubernetes.kubelet_env == Path(written)


def test_an_empty_optional_path_is_none_and_no_text() -> None:
    loaded = config.build(_raw(metrics__textfile_dir="", network__ca_bundle=""))
    assert (loaded.metrics.textfile_dir, loaded.metrics.path_text("textfile_dir")) == (None, "")
    assert loaded.network.ca_bundle is None


def test_build_checks_every_setting_and_check_false_each_when_read() -> None:
    raw = _raw(torcx__manifest_url="ftp://x/{{.OSVersion}}", network__proxy="http://proxy:3128")
    with pytest.raises(ConfigError, match=r"\[torcx\] manifest_url"):
        config.build(raw)
    lazy = config.build(raw, check=False)
    assert lazy.network.proxy == "http://proxy:3128"
    with pytest.raises(ConfigError, match=r"10-x.conf:3: \[torcx\] manifest_url = 'ftp://x/\{\{.OSVersion\}\}'"):
        _ = lazy.torcx.manifest_url
    with pytest.raises(ConfigError, match=r"\[torcx\] manifest_url"):
        lazy.check()


def test_the_configuration_is_read_only_and_compares_by_value() -> None:
    loaded = config.build({})
    with pytest.raises(AttributeError):
        loaded.network.retries = 7  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _ = loaded.network.no_such_setting  # type: ignore[attr-defined]
    assert config.build({}, check=False) == loaded and hash(config.build({})) == hash(loaded)
    assert config.build(_raw(network__retries="2")) != loaded
    assert "retries=5" in repr(loaded.network)


def test_the_shipped_file_sets_nothing_and_a_key_or_an_odd_line_does() -> None:
    assert config.sets_nothing(config.render_default())
    assert config.sets_nothing("")
    for text in ("[network]\nretries = 1\n", "[network]\n retries = 1\n", "rem x\n", "[DEFAULT]\n", "\ufeff# c\n",
                 "  # indented\n", "[torcx\n"):
        assert not config.sets_nothing(text), text
