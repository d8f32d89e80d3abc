"""Configuration: one table of settings, INI files read with iniparse.

``/etc/torcx-tectonic/torcx-tectonic.conf`` is read first, then the drop-ins
``/etc/torcx-tectonic/conf.d/*.conf`` in lexical order, later values winning.
Every key but the sources of the runtime (``[torcx] manifest_url``, and
``[sysext] images_url`` with that backend) has a default; the step that needs
one of those says which key to set. An unknown section or key, a
key set twice in one file, or a bad value is an error naming the file, the
line and what is allowed; whatever bytes the files hold, the only exception
that leaves this module is ConfigError.

The generator reads the configuration at every boot, so this module imports
nothing it does not need for that (no ``dataclasses``, ``typing``,
``pathlib``, ``socket``; ``re`` and iniparse only once a file sets
something: the shipped file, all comments, sets nothing), and a setting's
value is parsed from its text when it is first read: ``load()`` reads every one of them at once (what the steps
use, so a bad value stops a step before it acts), ``load(check=False)``
leaves the rest for when they are read (what the generator uses: it checks
the settings its units are made of, and the steps check all of them). Path
settings are ``pathlib.Path`` objects for the steps; the generator reads
them as text (``path_text``), which needs no pathlib.
"""

from __future__ import annotations

import errno
import io
import os
import stat

from .edges.inputfile import (
    DNS_SUBDOMAIN,
    KUBE_VERSION,
    NAME,
    NODE_NAME,
    RUNTIME_VERSION,
    Grammar,
    grammar,
    is_url,
    read_text,
)
from .errors import ConfigError, shown
from .paths import (
    CONFIG_DROPIN_DIR,
    CONFIG_FILE,
    INSTALLER_KUBELET_ENV,
    KEYRING,
    KUBECONFIG,
    KUBELET_ENV,
    METRICS_DIR,
    RUNTIME_MAPPINGS,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from pathlib import Path
    from typing import Any, ClassVar, TypeVar

    _S = TypeVar("_S", bound="_Section")

#: The bucket Tectonic's nodes used. Its host no longer exists, so it is not
#: the default: [torcx] manifest_url has none, and the first step that needs it
#: says so (see require_manifest_url).
HISTORIC_MANIFEST_URL = (
    "https://tectonic-torcx.release.core-os.net/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"
)
MANIFEST_URL_EXAMPLE = "https://bucket.example/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"
MIRROR_MANIFEST_URL_EXAMPLE = "file:///srv/mirror/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"
MIRROR_ADDONS_EXAMPLE = "file:///srv/mirror/addons"
DEFAULT_ANNOTATION = "container-linux-update.v1.coreos.com/tectonic-torcx-pre-hook-ok"
OS_UPDATE_FAILURE_CHOICES = ("continue", "fail")
BACKENDS = ("torcx", "sysext")
ACTIVATIONS = ("next-boot", "refresh")
TRUE_WORDS = ("yes", "true", "on", "1")
FALSE_WORDS = ("no", "false", "off", "0")


def parse_bool(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def _digits(text: str) -> bool:
    """1 to 9 ASCII digits."""
    return 0 < len(text) <= 9 and text.isascii() and text.isdigit()


class Number:
    """A number setting's parser and its documented range. Only plain
    decimal digits are accepted (no exponent, sign, ``_``, ``inf`` or
    ``nan``), and the range keeps every sum and product the generator and
    the steps make of these numbers finite and small."""

    __slots__ = ("maximum", "minimum", "unit", "whole")

    def __init__(self, minimum: float, maximum: float, whole: bool, unit: str = "") -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.whole = whole
        self.unit = unit

    def __repr__(self) -> str:
        return f"Number({self.minimum!r}, {self.maximum!r}, whole={self.whole!r}, unit={self.unit!r})"

    @property
    def allowed(self) -> str:
        if self.whole:
            return f"a whole number from {self.minimum:g} to {self.maximum:g}"
        return f"{self.unit or 'a number'} more than {self.minimum:g} and at most {self.maximum:g}"

    def __call__(self, value: str) -> float:
        whole, dot, fraction = value.partition(".")
        if not _digits(whole) or (dot and (self.whole or not _digits(fraction))):
            raise ValueError(f"expected {self.allowed}")
        number = int(value) if self.whole else float(value)
        low_ok = number >= self.minimum if self.whole else number > self.minimum
        if not low_ok or number > self.maximum:
            raise ValueError(f"expected {self.allowed}")
        return number


#: Characters no value may hold: values end up in unit files and paths. (The patterns of this module
#: are compiled when first used, by ``re``'s own cache: most of them, most runs never need.)
_CONTROL = frozenset(map(chr, [*range(0x20), 0x7F]))

#: An annotation key: a DNS-1123 subdomain prefix and a name, as Kubernetes allows them.
ANNOTATION = grammar(
    "PREFIX/NAME, a DNS-1123 subdomain and a name of letters, digits, '-', '_', '.', e.g. " + DEFAULT_ANNOTATION,
    rf"(?=[^/]{{1,253}}/){DNS_SUBDOMAIN}/(?=.{{1,63}}$)[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?",
    253 + 1 + 63,
)
_PLACEHOLDERS = {"{{.Board}}": "amd64-usr", "{{.OSVersion}}": "1632.3.0"}


def _grammar_parser(rule: Grammar, *, empty_ok: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not (empty_ok and not value) and not rule.matches(value):
            raise ValueError(f"expected {rule.expected}" + (" (or nothing)" if empty_ok else ""))
        return value

    return parse


#: The longest pause between two attempts of a step, however many there are.
MAX_RETRY_DELAY_SECS = 600.0
MAX_PATH_CHARS = 4096
SECONDS_PER_DAY = 86400
parse_retries = Number(0, 100, whole=True)
parse_attempts = Number(1, 100, whole=True)
parse_name = _grammar_parser(NAME)
parse_node_name = _grammar_parser(NODE_NAME, empty_ok=True)
parse_kube_version = _grammar_parser(KUBE_VERSION, empty_ok=True)
parse_annotation = _grammar_parser(ANNOTATION)
parse_pin = _grammar_parser(RUNTIME_VERSION, empty_ok=True)


def parse_path(value: str) -> str:
    """An absolute path without blanks: paths become unit lines, and systemd
    separates the paths of a list with spaces. The text is normalized the
    way ``pathlib.PurePosixPath`` writes it (no empty or ``.`` components,
    no trailing slash; ``..`` stays), so a unit line names the same path
    as the step that opens it."""
    if not value.startswith("/") or len(value) > MAX_PATH_CHARS or any(c.isspace() for c in value):
        raise ValueError(f"expected an absolute path without spaces (at most {MAX_PATH_CHARS} characters)")
    # POSIX keeps exactly two leading slashes (implementation-defined); pathlib does too.
    root = "//" if value.startswith("//") and not value.startswith("///") else "/"
    return root + "/".join(part for part in value.split("/") if part not in ("", "."))


def parse_optional_path(value: str) -> str:
    """A path, or nothing ("" turns the feature off)."""
    return parse_path(value) if value else ""


_PROXY = r"^(https?|socks5h?)://[A-Za-z0-9._~:@\[\]-]+(:[0-9]{1,5})?/?$"
_NO_PROXY_ENTRY = r"^[A-Za-z0-9._:*/\[\]-]+$"


def parse_proxy(value: str) -> str:
    """A proxy URL for the network steps' environment (no spaces, quotes or '%':
    it becomes a unit line)."""
    if not value:
        return value
    import re

    if not re.fullmatch(_PROXY, value):
        raise ValueError("expected a proxy URL like http://proxy.example.com:3128 (or nothing)")
    return value


def parse_no_proxy(value: str) -> str:
    if not value:
        return value
    import re

    if not all(re.fullmatch(_NO_PROXY_ENTRY, entry) for entry in value.split(",")):
        raise ValueError("expected host names, domains (.example.com) or addresses separated by commas (or nothing)")
    return value


def parse_manifest_url(value: str) -> str:
    """An http(s) or file:// URL template, or nothing (there is no working
    default: the step that needs it says what to set)."""
    if not value:
        return value
    filled = value
    for placeholder, example in _PLACEHOLDERS.items():
        filled = filled.replace(placeholder, example)
    if "{{" in filled or "}}" in filled:
        raise ValueError("expected no placeholders but {{.Board}} and {{.OSVersion}}")
    _location(filled, "with {{.Board}} and {{.OSVersion}}", forbidden="",
              http_expected="expected an http(s) URL template with {{.Board}} and {{.OSVersion}}, or a file:// one "
                            f"such as {MIRROR_MANIFEST_URL_EXAMPLE}")
    if "{{.OSVersion}}" not in value:
        raise ValueError("expected the placeholder {{.OSVersion}} in the URL template")
    return value


def parse_addon_mirror(value: str) -> str:
    """The base URL of an addon mirror (https, http or file), or nothing."""
    if not value:
        return value
    return _location(value, "(or nothing)", directory=True,
                     http_expected="expected the https://, http:// or file:// URL of a mirror's addons directory "
                                   "without placeholders, query or fragment, "
                                   f"e.g. {MIRROR_ADDONS_EXAMPLE} (or nothing)")


def parse_image_url(value: str) -> str:
    """An image URL template, https, http or file:// (empty: not set; the
    sysext steps then say which key to set)."""
    if not value:
        return value
    if "{{.Version}}" not in value:
        raise ValueError("expected the placeholder {{.Version}} in the URL template")
    _location(value.replace("{{.Name}}", "n").replace("{{.Version}}", "1").replace("{{.Arch}}", "a"),
              "template with {{.Name}}, {{.Version}} and {{.Arch}}")
    return value


def parse_optional_url(value: str) -> str:
    return _location(value, "(or nothing)") if value else value


def _location(filled: str, what: str, *, directory: bool = False, forbidden: str = "?#{}",
              http_expected: str | None = None) -> str:
    """A URL the bucket can read: https or http (none of ``forbidden`` in it),
    or a file:// mirror (a directory's, with ``directory``); ``what`` ends
    the error, ``http_expected`` replaces the one about the http form."""
    from .edges.source import FILE_URL_EXPECTED, file_url_problem, is_file_url

    if is_file_url(filled):
        problem = file_url_problem(filled, directory=directory)
        if problem is not None:
            raise ValueError(f"{problem}; expected {FILE_URL_EXPECTED} {what}")
    elif not is_url(filled, ("https", "http")) or any(c in filled for c in forbidden):
        raise ValueError(http_expected or f"expected an https://, http:// or file:// URL {what}")
    return filled


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


class Setting:
    """One key of the configuration: where it lives, how it parses, its
    default (as written in a file) and what it is for."""

    __slots__ = ("default", "example", "help", "key", "parse", "section")

    def __init__(self, section: str, key: str, parse: Callable[[str], Any], default: str, help: str,
                 example: str = "") -> None:
        self.section = section
        self.key = key
        self.parse = parse
        self.default = default
        self.help = help
        #: a value the shipped file shows as an example (for a key whose default is nothing)
        self.example = example

    def __repr__(self) -> str:
        return f"Setting({self.section!r}, {self.key!r}, default={self.default!r})"

    @property
    def is_path(self) -> bool:
        """Its value is a path: a ``pathlib.Path`` to the steps (None when empty)."""
        return self.parse in (parse_path, parse_optional_path)

    @property
    def doc(self) -> str:
        """The help, with the range of a number (what the shipped file says)."""
        allowed = self.parse.allowed if isinstance(self.parse, Number) else ""
        return f"{self.help} ({allowed})" if allowed else self.help


SETTINGS: tuple[Setting, ...] = (
    Setting("torcx", "manifest_url", parse_manifest_url, "",
            "URL template of the signed addon package manifests, https://, http:// or file:// (a local mirror); "
            "no default: the historic bucket is gone, set it", example=MANIFEST_URL_EXAMPLE),
    Setting("torcx", "verify_signatures", parse_bool, "yes",
            "verify each manifest against its detached .asc signature"),
    Setting("torcx", "keyring", parse_path, str(KEYRING),
            "OpenPGP keyring (binary or armored) trusted for manifest signatures"),
    Setting("torcx", "profile", parse_name, "tectonic",
            "torcx profile to create when no user profile is selected"),
    Setting("torcx", "addon", parse_name, "docker", "name of the container runtime addon"),
    Setting("torcx", "addon_mirror", parse_addon_mirror, "",
            "base URL of an addon mirror made by `torcx-tectonic mirror`: addons are fetched from "
            "<base>/<board>/<OS version>/<name>:<version>.torcx.tgz instead of the manifest's URLs, and checked "
            "against the manifest's sha512 all the same (empty: the manifest's URLs)", example=MIRROR_ADDONS_EXAMPLE),
    Setting("kubernetes", "kubeconfig", parse_path, str(KUBECONFIG),
            "kubeconfig used to reach the api-server"),
    Setting("kubernetes", "force_version", parse_kube_version, "",
            "use this Kubernetes version instead of asking the cluster (e.g. v1.8.4+coreos.0)"),
    Setting("kubernetes", "kubelet_env", parse_path, str(KUBELET_ENV),
            "kubelet environment file written by bootstrap"),
    Setting("kubernetes", "installer_kubelet_env", parse_path, str(INSTALLER_KUBELET_ENV),
            "installer's kubelet environment file (template and fallback version)"),
    Setting("kubernetes", "runtime_mappings", parse_path, str(RUNTIME_MAPPINGS),
            "node-local runtime mappings, used when the ConfigMap cannot be read"),
    Setting("kubernetes", "node_name", parse_node_name, "",
            "this node's name (empty: the host name in lowercase, as kubelet names the node)"),
    Setting("kubernetes", "annotation", parse_annotation, DEFAULT_ANNOTATION,
            "before-reboot hook annotation; its prefix also names the before-reboot label"),
    Setting("kubernetes", "label_timeout", Number(0, SECONDS_PER_DAY, whole=False, unit="seconds"), "3600",
            "seconds to wait for the before-reboot label before the step fails (and retries)"),
    Setting("kubernetes", "label_poll_max_interval", Number(0, 3600, whole=False, unit="seconds"), "30",
            "longest pause between two looks at the node while waiting for the label"),
    Setting("kubernetes", "node_labels", parse_bool, "yes",
            "after each run, and at boot, label this node's Node object with the runtime it runs "
            "(torcx-tectonic.io/runtime) and its next-boot verdict (torcx-tectonic.io/next-boot=ok|not-ok), and "
            "annotate it with the verdict's reason (torcx-tectonic.io/reason)"),
    Setting("bootstrap", "upgrade_os", parse_bool, "yes", "force an OS update before configuring torcx"),
    Setting("bootstrap", "skip_torcx", parse_bool, "no", "leave torcx alone (only set the kubelet version)"),
    Setting("bootstrap", "reboot", parse_bool, "yes", "reboot when the OS or Docker changed"),
    Setting("bootstrap", "os_update_failure", choice(*OS_UPDATE_FAILURE_CHOICES), "continue",
            "after the last failed OS update attempt: continue on the current OS, or fail"),
    Setting("bootstrap", "os_update_attempts", parse_attempts, "3", "OS update attempts before giving up"),
    Setting("bootstrap", "os_update_timeout", Number(0, SECONDS_PER_DAY, whole=False, unit="seconds"), "1800",
            "seconds one OS update attempt may take"),
    Setting("network", "connect_timeout", Number(0, 600, whole=False, unit="seconds"), "10",
            "seconds to connect to a server"),
    Setting("network", "read_timeout", Number(0, 3600, whole=False, unit="seconds"), "60",
            "seconds to wait for data from a server"),
    Setting("network", "retries", parse_retries, "5", "retries of a failed request (with backoff)"),
    Setting("network", "backoff_factor", Number(0, 60, whole=False), "1",
            "backoff between retries: factor * 2^(retry-1) seconds"),
    Setting("units", "retry_delay", Number(0, MAX_RETRY_DELAY_SECS, whole=False, unit="seconds"), "30",
            "seconds before a failed network step (Docker version, addons, annotation) is tried again; doubles"),
    Setting("units", "retry_attempts", parse_attempts, "5",
            "attempts of a network step before its unit fails (a new-OS flow is then triggered again, after "
            "backoff_delay)"),
    Setting("units", "backoff_delay", Number(0, SECONDS_PER_DAY, whole=False, unit="seconds"), "600",
            "seconds before a failed new-OS run is started again while the update waits; doubles with each run "
            "that fails in a row, up to backoff_max_delay, and each pause is a random 50 to 100 % of that so a "
            "fleet spreads out (`torcx-tectonic retry new-os` starts one at once)"),
    Setting("units", "backoff_max_delay", Number(0, SECONDS_PER_DAY, whole=False, unit="seconds"), "7200",
            "the longest pause between two failed new-OS runs"),
    Setting("network", "ca_bundle", parse_optional_path, "",
            "CA bundle trusted for the release bucket instead of the system's (empty: the system's)"),
    Setting("network", "proxy", parse_proxy, "",
            "proxy for the network steps' requests, given to them as HTTPS_PROXY and HTTP_PROXY; works on every "
            "systemd (empty: the units' environment decides, e.g. a drop-in or DefaultEnvironment=)"),
    Setting("network", "no_proxy", parse_no_proxy, "",
            "hosts the network steps reach without the proxy (NO_PROXY), e.g. the api-server's address"),
    Setting("runtime", "backend", choice(*BACKENDS), "torcx",
            "how the node gets its container runtime: torcx addons (Container Linux; Flatcar up to 3760) or "
            "system extension images merged by systemd-sysext (Flatcar from 3794)"),
    Setting("runtime", "pin", parse_pin, "",
            "hold the node at this runtime version, whatever the runtime mappings prefer (empty: no pin); the node's "
            "annotation torcx-tectonic.io/pin-runtime wins over it, and it must be a version the mappings list for "
            "some Kubernetes minor", example="17.03"),
    Setting("sysext", "runtime", choice("docker", "containerd"), "docker",
            "the container runtime whose image is kept (its versions come from the runtime mappings)"),
    Setting("sysext", "images_url", parse_image_url, "",
            "URL template of a runtime image, with {{.Name}}, {{.Version}} and {{.Arch}} (x86-64, arm64), e.g. "
            "https://mirror.example/sysext/{{.Name}}-{{.Version}}-{{.Arch}}.raw (required with backend = sysext)"),
    Setting("sysext", "checksums_url", parse_optional_url, "",
            "URL of the SHA256SUMS list of the images (empty: SHA256SUMS beside the images)"),
    Setting("sysext", "verify_signatures", parse_bool, "yes",
            "verify the checksum list against its detached .asc signature"),
    Setting("sysext", "keyring", parse_path, str(KEYRING),
            "OpenPGP keyring (binary or armored) trusted for the checksum list's signature"),
    Setting("sysext", "keep", Number(1, 20, whole=True), "2",
            "runtime images kept in /opt/extensions/<runtime>/: the one in use and older ones for rollback"),
    Setting("sysext", "mask_builtin", parse_bool, "yes",
            "mask Flatcar's own image of the runtime (/etc/extensions/<runtime>-flatcar.raw -> /dev/null)"),
    Setting("sysext", "activate", choice(*ACTIVATIONS), "next-boot",
            "when a new image is merged: at the next boot, or at once (systemd-sysext is restarted; a running "
            "runtime keeps its old binaries until it restarts)"),
    Setting("sysext", "kubernetes", parse_bool, "no",
            "also keep the kubelet's image (kubernetes-vX.Y.Z-ARCH.raw from the same checksum list, linked as "
            "/etc/extensions/kubernetes.raw) at the api-server's version as Kubernetes' version-skew policy allows, "
            "and follow control-plane upgrades one minor at a time (torcx-follow-api-server.timer)"),
    Setting("metrics", "textfile_dir", parse_optional_path, str(METRICS_DIR),
            "directory of node-exporter's textfile collector, rewritten whenever a run changes (empty: no metrics)"),
)

SETTINGS_BY_NAME: Mapping[tuple[str, str], Setting] = {(s.section, s.key): s for s in SETTINGS}
SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS))
_HEADERS = frozenset(f"[{section}]" for section in SECTIONS)


class RawValue:
    """A setting's text as a file gave it, and where (``file:line``)."""

    __slots__ = ("origin", "value")

    def __init__(self, value: str, origin: str) -> None:
        self.value = value
        self.origin = origin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawValue) and (other.value, other.origin) == (self.value, self.origin)

    def __hash__(self) -> int:
        return hash((self.value, self.origin))

    def __repr__(self) -> str:
        return f"RawValue({self.value!r}, {self.origin!r})"


def _parse(setting: Setting, given: RawValue | None) -> Any:
    """The value of ``setting`` from its text (the default when not given);
    a bad value is a ConfigError naming where it was written."""
    text = given.value if given else setting.default
    try:
        if not _CONTROL.isdisjoint(text):  # a continuation line's newline, a tab, a NUL
            raise ValueError("expected one line without control characters")
        return setting.parse(text)
    except ValueError as err:
        where = given.origin if given else "built-in default"
        raise ConfigError(f"{where}: [{setting.section}] {setting.key} = {shown(text)}: {err}") from None


class _Section:
    """One section of the validated configuration, read-only. A setting is
    parsed from its text when it is first read (see the module's docstring);
    the tests may also build a section from values."""

    SECTION: ClassVar[str] = ""

    def __init__(self, raw: Mapping[str, RawValue] | None = None, /, **values: Any) -> None:
        unknown = sorted(set(values) - set(self.keys()))
        if unknown:
            raise TypeError(f"[{self.SECTION}] has no setting {unknown[0]!r}")
        self.__dict__["_raw"] = dict(raw or {})
        self.__dict__["_texts"] = {}
        self.__dict__.update(values)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(s.key for s in SETTINGS if s.section == cls.SECTION)

    def _value(self, key: str) -> Any:
        """The parsed value (a path as its text), parsed now if it was not yet."""
        texts: dict[str, Any] = self.__dict__["_texts"]
        if key not in texts:
            if key in self.__dict__:  # given as a value
                given = self.__dict__[key]
                texts[key] = "" if given is None else (os.fspath(given) if hasattr(given, "__fspath__") else given)
            else:
                texts[key] = self._finish(key, _parse(SETTINGS_BY_NAME[(self.SECTION, key)],
                                                      self.__dict__["_raw"].get(key)))
        return texts[key]

    def _finish(self, key: str, value: Any) -> Any:
        """What a section makes of a parsed value (a default that depends on the node)."""
        return value

    def path_text(self, key: str) -> str:
        """A path setting's value as text ("" when it is empty): what the
        generator writes into unit lines, without building a Path."""
        value = self._value(key)
        assert isinstance(value, str), key
        return value

    def check(self) -> None:
        """Parse every setting of the section now: the first bad one raises."""
        for key in self.keys():
            self._value(key)

    if not TYPE_CHECKING:  # mypy sees the declared attributes; this reads them

        def __getattr__(self, key: str) -> Any:
            """A setting read for the first time."""
            setting = SETTINGS_BY_NAME.get((self.SECTION, key))
            if setting is None or key.startswith("_"):
                raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")
            value = self._value(key)
            if setting.is_path:
                from pathlib import Path

                value = Path(value) if value else None
            self.__dict__[key] = value
            return value

    def __setattr__(self, key: str, value: object) -> None:
        raise AttributeError(f"the configuration is read-only: cannot set {key}")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, key) for key in self.keys())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{key}={getattr(self, key)!r}' for key in self.keys())})"

    def replacing(self: _S, **values: Any) -> _S:
        """The section with ``values`` instead of those settings (the mirror
        command's options override the configuration's)."""
        given = {key: self.__dict__[key] for key in self.keys() if key in self.__dict__ and key not in values}
        return type(self)(self.__dict__["_raw"], **given, **values)


class TorcxSettings(_Section):
    SECTION = "torcx"
    manifest_url: str
    verify_signatures: bool
    keyring: Path
    profile: str
    addon: str
    addon_mirror: str


def require_manifest_url(torcx: TorcxSettings) -> str:
    """The manifest URL template; a ConfigError naming the key to set when
    it is not set."""
    if not torcx.manifest_url:
        raise ConfigError(
            f"[torcx] manifest_url is not set (in {CONFIG_FILE} or {CONFIG_DROPIN_DIR}/*.conf) and has no default: "
            "the historic bucket tectonic-torcx.release.core-os.net no longer exists; expected the URL template of "
            f"the signed addon manifests, e.g. manifest_url = {MANIFEST_URL_EXAMPLE}, or for a mirror made by "
            f"`torcx-tectonic mirror`, manifest_url = {MIRROR_MANIFEST_URL_EXAMPLE}")
    return torcx.manifest_url


class KubernetesSettings(_Section):
    SECTION = "kubernetes"
    kubeconfig: Path
    force_version: str
    kubelet_env: Path
    installer_kubelet_env: Path
    runtime_mappings: Path
    node_name: str
    annotation: str
    label_timeout: float
    label_poll_max_interval: float
    node_labels: bool

    def _finish(self, key: str, value: Any) -> Any:
        if key == "node_name" and not value:
            return host_name().strip().lower()  # as kubelet names the node
        return value


class BootstrapSettings(_Section):
    SECTION = "bootstrap"
    upgrade_os: bool
    skip_torcx: bool
    reboot: bool
    os_update_failure: str
    os_update_attempts: int
    os_update_timeout: float


class NetworkSettings(_Section):
    SECTION = "network"
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff_factor: float
    ca_bundle: Path | None
    proxy: str
    no_proxy: str


class RuntimeSettings(_Section):
    SECTION = "runtime"
    backend: str
    pin: str


class SysextSettings(_Section):
    SECTION = "sysext"
    runtime: str
    images_url: str
    checksums_url: str
    verify_signatures: bool
    keyring: Path
    keep: int
    mask_builtin: bool
    activate: str
    kubernetes: bool

    @property
    def sums_url(self) -> str:
        """The checksum list's URL: as configured, or SHA256SUMS beside the images."""
        return self.checksums_url or self.images_url.rsplit("/", 1)[0] + "/SHA256SUMS"


class MetricsSettings(_Section):
    SECTION = "metrics"
    textfile_dir: Path | None


class UnitSettings(_Section):
    SECTION = "units"
    retry_delay: float
    retry_attempts: int
    backoff_delay: float
    backoff_max_delay: float


def host_name() -> str:
    """This node's host name: what ``gethostname()`` returns on Linux (it
    reads ``uname``), without loading the socket module."""
    return os.uname().nodename


def runtime_name(config: Config) -> str:
    """The container runtime the node keeps: the torcx addon, or the name of
    the system extension image."""
    return config.sysext.runtime if config.runtime.backend == "sysext" else config.torcx.addon


def retry_delays(units: UnitSettings) -> list[float]:
    """Pauses between the attempts of a network step: doubling from
    ``retry_delay``, capped, one fewer than the attempts."""
    return [min(units.retry_delay * 2**n, MAX_RETRY_DELAY_SECS) for n in range(units.retry_attempts - 1)]


def total_retry_delay(units: UnitSettings) -> float:
    return sum(retry_delays(units))


class Config:
    """The validated configuration, plus the files it came from."""

    __slots__ = ("_sources", "bootstrap", "kubernetes", "metrics", "network", "runtime", "sysext", "torcx", "units")

    def __init__(self, torcx: TorcxSettings, kubernetes: KubernetesSettings, bootstrap: BootstrapSettings,
                 network: NetworkSettings, units: UnitSettings, metrics: MetricsSettings,
                 runtime: RuntimeSettings, sysext: SysextSettings,
                 sources: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.torcx = torcx
        self.kubernetes = kubernetes
        self.bootstrap = bootstrap
        self.network = network
        self.units = units
        self.metrics = metrics
        self.runtime = runtime
        self.sysext = sysext
        self._sources = tuple(os.fspath(source) for source in sources)

    @property
    def sections(self) -> tuple[_Section, ...]:
        return (self.torcx, self.kubernetes, self.bootstrap, self.network, self.units, self.metrics, self.runtime,
                self.sysext)

    def replacing(self, **sections: _Section) -> Config:
        """The configuration with ``sections`` instead of those it has."""
        current = {section.SECTION: section for section in self.sections}
        current.update(sections)
        return Config(sources=self._sources, **current)  # type: ignore[arg-type]

    @property
    def sources(self) -> tuple[Path, ...]:
        """The files the configuration came from, in the order they apply."""
        from pathlib import Path

        return tuple(Path(source) for source in self._sources)

    def last_source(self) -> str | None:
        """The file that applies last, as text (a unit's SourcePath=)."""
        return self._sources[-1] if self._sources else None

    def check(self) -> None:
        """Parse every setting now, in the table's order: the first bad one raises."""
        by_name = {section.SECTION: section for section in self.sections}
        for setting in SETTINGS:
            by_name[setting.section]._value(setting.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and (self.sections, self._sources) == (other.sections, other._sources)

    def __hash__(self) -> int:
        return hash((self.sections, self._sources))

    def __repr__(self) -> str:
        return f"Config({', '.join(map(repr, self.sections))}, sources={self._sources!r})"


# The line kinds of iniparse, tried in its order (a line starting with "rem"
# is a comment to it, as in old Windows INI files).
_COMMENT_LINE = r"[;#]|[rR][eE][mM]"
_SECTION_LINE = r"\[(?P<name>[^\]]+)\]\s*(?:[;#].*)?$"
_OPTION_LINE = r"(?P<key>[^:=\s\[][^:=]*)[:=]"
#: How much of a parser's complaint an error quotes.
DETAIL_CHARS = 200


def _option_lines(text: str, origin: str) -> dict[tuple[str, str], int]:
    """The line of each (section, key), classifying lines as iniparse does
    (which keeps line numbers only in distribution-patched builds). A key
    set twice in one file is refused: which one counts would be a guess."""
    import re

    found: dict[tuple[str, str], int] = {}
    section = None
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.rstrip()
        if not line or re.match(_COMMENT_LINE, line):
            continue
        header = re.match(_SECTION_LINE, line)
        if header:
            section = header["name"]
            continue
        option = re.match(_OPTION_LINE, line)
        if section is None or option is None:
            continue
        name = (section, option["key"].rstrip())
        if name in found:
            raise ConfigError(f"{origin}:{number}: [{section}] {shown(name[1])} is set again (first on line "
                              f"{found[name]}); expected each key once per file")
        found[name] = number
    return found


def sets_nothing(text: str) -> bool:
    """Whether the text holds only blank lines, comments that iniparse reads
    as such (``;`` or ``#`` in the first column, no byte order mark) and
    headers of known sections alone on their lines, as the shipped file
    does: iniparse finds no key in it, and is not needed to know."""
    return all(line.startswith(("#", ";")) or not line.strip() or line in _HEADERS for line in text.split("\n"))


def iter_ini(text: str, origin: str) -> Iterator[tuple[str, str, str, int]]:
    """Yield (section, key, value, line) from INI text, parsed by iniparse
    (which is loaded only for a text that may set something)."""
    if sets_nothing(text):
        return
    import iniparse  # type: ignore[import-untyped]

    try:
        document = iniparse.INIConfig(io.StringIO(text), optionxformvalue=None)
    except Exception as err:  # iniparse raises its own ParsingError/MissingSectionHeaderError
        detail = " ".join(str(err).replace("'<???>'", "").replace("file: ,", "").split())
        raise ConfigError(f"{origin}: not a valid INI file: {detail[:DETAIL_CHARS]}") from None
    lines = _option_lines(text, origin)
    # iniparse hides [DEFAULT] and copies its keys into every section: refuse it.
    defaults = sorted(number for (section, _), number in lines.items() if section == "DEFAULT")
    if defaults:
        raise ConfigError(f"{origin}:{defaults[0]}: unknown section [DEFAULT]; allowed: {', '.join(SECTIONS)}")
    for section in document:
        for key in document[section]:
            yield section, key, str(document[section][key]).strip(), lines.get((section, key), 0)


def collect(files: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RawValue]:
    """Merge (origin, text) INI documents in order; reject unknown names."""
    merged: dict[tuple[str, str], RawValue] = {}
    for origin, text in files:
        for section, key, value, line in iter_ini(text, origin):
            where = f"{origin}:{line}"
            if section not in SECTIONS:
                raise ConfigError(f"{where}: unknown section {shown(section)}; allowed: {', '.join(SECTIONS)}")
            if (section, key) not in SETTINGS_BY_NAME:
                allowed = ", ".join(s.key for s in SETTINGS if s.section == section)
                raise ConfigError(f"{where}: unknown key {shown(key)} in [{section}]; allowed: {allowed}")
            merged[(section, key)] = RawValue(value, where)
    return merged


def build(raw: Mapping[tuple[str, str], RawValue], sources: Iterable[str | os.PathLike[str]] = (), *,
          check: bool = True) -> Config:
    """The configuration from the settings' texts (the defaults where none
    is given), every setting parsed now unless ``check`` is false (then each
    is parsed when first read, and a bad one raises then)."""
    def section(cls: type[_S]) -> _S:
        return cls({key: value for (name, key), value in raw.items() if name == cls.SECTION})

    config = Config(torcx=section(TorcxSettings), kubernetes=section(KubernetesSettings),
                    bootstrap=section(BootstrapSettings), network=section(NetworkSettings),
                    units=section(UnitSettings), metrics=section(MetricsSettings),
                    runtime=section(RuntimeSettings), sysext=section(SysextSettings), sources=sources)
    if check:
        config.check()
    return config


#: What the errno of an OSError means for "is something there?": nothing is (as pathlib reads it).
_NOTHING_THERE = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)


def _is(path: str, kind: Callable[[int], bool] | None = None) -> bool:
    """Whether ``path`` exists (and is of ``kind``), following links; other errors raise."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if err.errno in _NOTHING_THERE:
            return False
        raise
    return kind is None or kind(mode)


def config_files(main: str | os.PathLike[str] = CONFIG_FILE,
                 dropin_dir: str | os.PathLike[str] = CONFIG_DROPIN_DIR) -> list[str]:
    """The files that make up the configuration, in the order they apply:
    the main file if anything is there (a directory there is an error when
    read), then the drop-ins that are files."""
    main, dropin_dir = os.fspath(main), os.fspath(dropin_dir)
    try:
        files = [main] if _is(main) else []
        if _is(dropin_dir, stat.S_ISDIR):
            names = sorted(name for name in os.listdir(dropin_dir) if name.endswith(".conf"))
            files.extend(path for path in (os.path.join(dropin_dir, name) for name in names)
                         if _is(path, stat.S_ISREG))
    except OSError as err:
        raise ConfigError(f"{main} or {dropin_dir}: cannot list the configuration files: {err.strerror}") from None
    return files


def load(main: str | os.PathLike[str] = CONFIG_FILE, dropin_dir: str | os.PathLike[str] = CONFIG_DROPIN_DIR, *,
         check: bool = True) -> Config:
    """Read and validate the configuration of this node. Whatever the files
    hold, the only error that escapes is a ConfigError (the generator then
    falls back to the defaults). ``check=False`` leaves each setting's value
    to be checked when it is first read (see the module's docstring)."""
    files = config_files(main, dropin_dir)
    documents = [(path, read_text(path, "an INI configuration file", error=ConfigError)) for path in files]
    return build(collect(documents), files, check=check)


def render_default() -> str:
    """The commented default configuration file, made from the table so the
    shipped file can never disagree with the code."""
    out = [
        "# torcx-tectonic configuration. Every key shows its default, commented out.",
        "# Drop-ins in /etc/torcx-tectonic/conf.d/*.conf override this file.",
    ]
    for section in SECTIONS:
        out.append("")
        out.append(f"[{section}]")
        for setting in (s for s in SETTINGS if s.section == section):
            out.append(f"# {setting.doc}")
            out.append(f"#{setting.key} = {setting.default}")
            if setting.example:
                out.append(f"# for example: {setting.key} = {setting.example}")
    return "\n".join(out) + "\n"


def render_reference() -> str:
    """docs/configuration.md: the settings table as markdown, made from the
    table as the shipped file is (``python3 -m torcx_tectonic.config``
    writes it; a unit test keeps the committed file in step)."""

    def cell(text: str) -> str:  # markdown would read <board> as a tag and | as a column
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<")

    out = [
        "# Configuration reference",
        "",
        "Generated from the settings table in `torcx_tectonic/config.py` by",
        "`python3 -m torcx_tectonic.config > docs/configuration.md`; a unit test fails when this",
        "file and the table disagree. The installed file lists the same keys, commented out.",
        "",
        f"The configuration is `{CONFIG_FILE}`, then `{CONFIG_DROPIN_DIR}/*.conf` in lexical",
        "order, a later value winning. Every key has a default except `[torcx] manifest_url` (and",
        "`[sysext] images_url` with `backend = sysext`): the step that needs one names it. An",
        "unknown section or key, a key set twice in one file or a bad value is an error naming the",
        "file and line. The generator reads the configuration too: run `systemctl daemon-reload`",
        "after a change.",
    ]
    for section in SECTIONS:
        out += ["", f"## [{section}]", "", "| key | default | meaning |", "|---|---|---|"]
        for setting in (s for s in SETTINGS if s.section == section):
            default = f"`{setting.default}`" if setting.default else "(empty)"
            example = f" Example: `{setting.example}`." if setting.example else ""
            out.append(f"| `{setting.key}` | {default} | {cell(setting.doc)}.{example} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python3 -m torcx_tectonic.config > docs/configuration.md
    print(render_reference(), end="")
