"""Configuration: one table of settings, INI files read with iniparse.

``/etc/torcx-tectonic/torcx-tectonic.conf`` is read first, then the drop-ins
``/etc/torcx-tectonic/conf.d/*.conf`` in lexical order, later values winning.
Every key has a default, so no file is needed. An unknown section or key, or
a bad value, is an error naming the file, the line and what is allowed.
"""

from __future__ import annotations

import io
import math
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iniparse  # type: ignore[import-untyped]

from .errors import ConfigError
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

HISTORIC_MANIFEST_URL = (
    "https://tectonic-torcx.release.core-os.net/manifests/{{.Board}}/{{.OSVersion}}/torcx_manifest.json"
)
DEFAULT_ANNOTATION = "container-linux-update.v1.coreos.com/tectonic-torcx-pre-hook-ok"
OS_UPDATE_FAILURE_CHOICES = ("continue", "fail")
TRUE_WORDS = ("yes", "true", "on", "1")
FALSE_WORDS = ("no", "false", "off", "0")


def parse_bool(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"expected one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def parse_positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not number > 0:
        raise ValueError("expected a number greater than 0")
    if math.isinf(number):  # the generator turns these into whole seconds for systemd
        raise ValueError("expected a finite number of seconds")
    return number


def whole_number(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("expected a whole number") from None
        if number < minimum:
            raise ValueError(f"expected a whole number of {minimum} or more")
        return number

    return parse


parse_count = whole_number(0)
parse_attempts = whole_number(1)


def parse_path(value: str) -> Path:
    if not value.startswith("/"):
        raise ValueError("expected an absolute path")
    return Path(value)


def parse_optional_path(value: str) -> Path | None:
    return parse_path(value) if value else None


def parse_word(value: str) -> str:
    if not value or "/" in value or value in (".", "..") or any(c.isspace() for c in value):
        raise ValueError("expected a name without '/', spaces or dots-only")
    return value


def parse_text(value: str) -> str:
    return value


def parse_manifest_url(value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ValueError("expected an http(s) URL template with {{.Board}} and {{.OSVersion}}")
    if "{{.OSVersion}}" not in value:
        raise ValueError("expected the placeholder {{.OSVersion}} in the URL template")
    return value


def parse_annotation(value: str) -> str:
    prefix, sep, name = value.rpartition("/")
    if not sep or not prefix or not name:
        raise ValueError("expected PREFIX/NAME, e.g. " + DEFAULT_ANNOTATION)
    return value


def choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return value

    return parse


@dataclass(frozen=True)
class Setting:
    """One key of the configuration: where it lives, how it parses, its
    default (as written in a file) and what it is for."""

    section: str
    key: str
    parse: Callable[[str], Any]
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("torcx", "manifest_url", parse_manifest_url, HISTORIC_MANIFEST_URL,
            "URL template of the signed addon package manifest"),
    Setting("torcx", "verify_signatures", parse_bool, "yes",
            "verify each manifest against its detached .asc signature"),
    Setting("torcx", "keyring", parse_path, str(KEYRING),
            "OpenPGP keyring (binary or armored) trusted for manifest signatures"),
    Setting("torcx", "profile", parse_word, "tectonic",
            "torcx profile to create when no user profile is selected"),
    Setting("torcx", "addon", parse_word, "docker", "name of the container runtime addon"),
    Setting("kubernetes", "kubeconfig", parse_path, str(KUBECONFIG),
            "kubeconfig used to reach the api-server"),
    Setting("kubernetes", "force_version", parse_text, "",
            "use this Kubernetes version instead of asking the cluster (e.g. v1.8.4+coreos.0)"),
    Setting("kubernetes", "kubelet_env", parse_path, str(KUBELET_ENV),
            "kubelet environment file written by bootstrap"),
    Setting("kubernetes", "installer_kubelet_env", parse_path, str(INSTALLER_KUBELET_ENV),
            "installer's kubelet environment file (template and fallback version)"),
    Setting("kubernetes", "runtime_mappings", parse_path, str(RUNTIME_MAPPINGS),
            "node-local runtime mappings, used when the ConfigMap cannot be read"),
    Setting("kubernetes", "node_name", parse_text, "", "this node's name (empty: the host name)"),
    Setting("kubernetes", "annotation", parse_annotation, DEFAULT_ANNOTATION,
            "before-reboot hook annotation; its prefix also names the before-reboot label"),
    Setting("kubernetes", "label_timeout", parse_positive_float, "3600",
            "seconds to wait for the before-reboot label before the step fails (and retries)"),
    Setting("kubernetes", "label_poll_max_interval", parse_positive_float, "30",
            "longest pause between two looks at the node while waiting for the label"),
    Setting("bootstrap", "upgrade_os", parse_bool, "yes", "force an OS update before configuring torcx"),
    Setting("bootstrap", "skip_torcx", parse_bool, "no", "leave torcx alone (only set the kubelet version)"),
    Setting("bootstrap", "reboot", parse_bool, "yes", "reboot when the OS or Docker changed"),
    Setting("bootstrap", "os_update_failure", choice(*OS_UPDATE_FAILURE_CHOICES), "continue",
            "after the last failed OS update attempt: continue on the current OS, or fail"),
    Setting("bootstrap", "os_update_attempts", parse_attempts, "3", "OS update attempts before giving up"),
    Setting("bootstrap", "os_update_timeout", parse_positive_float, "1800",
            "seconds one OS update attempt may take"),
    Setting("network", "connect_timeout", parse_positive_float, "10", "seconds to connect to a server"),
    Setting("network", "read_timeout", parse_positive_float, "60", "seconds to wait for data from a server"),
    Setting("network", "retries", parse_count, "5", "retries of a failed request (with backoff)"),
    Setting("network", "backoff_factor", parse_positive_float, "1",
            "backoff between retries: factor * 2^(retry-1) seconds"),
    Setting("units", "retry_delay", parse_positive_float, "30",
            "seconds before a failed network step (Docker version, addons, annotation) is tried again; doubles"),
    Setting("units", "retry_attempts", parse_attempts, "5",
            "attempts of a network step before its unit fails (a new-OS flow is then triggered again)"),
    Setting("network", "ca_bundle", parse_optional_path, "",
            "CA bundle trusted for the release bucket instead of the system's (empty: the system's)"),
    Setting("metrics", "textfile_dir", parse_optional_path, str(METRICS_DIR),
            "directory of node-exporter's textfile collector, written after every step (empty: no metrics)"),
)

SETTINGS_BY_NAME: Mapping[tuple[str, str], Setting] = {(s.section, s.key): s for s in SETTINGS}
SECTIONS = tuple(dict.fromkeys(s.section for s in SETTINGS))


@dataclass(frozen=True)
class TorcxSettings:
    manifest_url: str
    verify_signatures: bool
    keyring: Path
    profile: str
    addon: str


@dataclass(frozen=True)
class KubernetesSettings:
    kubeconfig: Path
    force_version: str
    kubelet_env: Path
    installer_kubelet_env: Path
    runtime_mappings: Path
    node_name: str
    annotation: str
    label_timeout: float
    label_poll_max_interval: float


@dataclass(frozen=True)
class BootstrapSettings:
    upgrade_os: bool
    skip_torcx: bool
    reboot: bool
    os_update_failure: str
    os_update_attempts: int
    os_update_timeout: float


@dataclass(frozen=True)
class NetworkSettings:
    connect_timeout: float
    read_timeout: float
    retries: int
    backoff_factor: float
    ca_bundle: Path | None


@dataclass(frozen=True)
class MetricsSettings:
    textfile_dir: Path | None


@dataclass(frozen=True)
class UnitSettings:
    retry_delay: float
    retry_attempts: int


#: The longest pause between two attempts of a step, however many there are.
MAX_RETRY_DELAY_SECS = 600.0


def retry_delays(units: UnitSettings) -> list[float]:
    """Pauses between the attempts of a network step: doubling from
    ``retry_delay``, capped, one fewer than the attempts."""
    return [min(units.retry_delay * 2**n, MAX_RETRY_DELAY_SECS) for n in range(units.retry_attempts - 1)]


def total_retry_delay(units: UnitSettings) -> float:
    return sum(retry_delays(units))


@dataclass(frozen=True)
class Config:
    """The validated configuration, plus the files it came from."""

    torcx: TorcxSettings
    kubernetes: KubernetesSettings
    bootstrap: BootstrapSettings
    network: NetworkSettings
    units: UnitSettings
    metrics: MetricsSettings
    sources: tuple[Path, ...]


@dataclass(frozen=True)
class RawValue:
    value: str
    origin: str


_SECTION_LINE = re.compile(r"^\[(?P<name>[^\]]+)\]")
_OPTION_LINE = re.compile(r"^(?P<key>[^\s=:#;\[][^=:]*?)\s*[=:]")


def _option_lines(text: str) -> dict[tuple[str, str], int]:
    """Where each (section, key) is set last. iniparse only keeps line numbers
    in distribution-patched builds, so errors find their line here."""
    found: dict[tuple[str, str], int] = {}
    section = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _SECTION_LINE.match(line)
        if header:
            section = header["name"].strip()
            continue
        option = _OPTION_LINE.match(line)
        if section is not None and option:
            found[(section, option["key"].strip())] = number
    return found


def iter_ini(text: str, origin: str) -> Iterator[tuple[str, str, str, int]]:
    """Yield (section, key, value, line) from INI text, parsed by iniparse."""
    try:
        document = iniparse.INIConfig(io.StringIO(text), optionxformvalue=None)
    except Exception as err:  # iniparse raises its own ParsingError/MissingSectionHeaderError
        detail = " ".join(str(err).replace("'<???>'", "").replace("file: ,", "").split())
        raise ConfigError(f"{origin}: not a valid INI file: {detail}") from None
    lines = _option_lines(text)
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
                raise ConfigError(f"{where}: unknown section [{section}]; allowed: {', '.join(SECTIONS)}")
            if (section, key) not in SETTINGS_BY_NAME:
                allowed = ", ".join(s.key for s in SETTINGS if s.section == section)
                raise ConfigError(f"{where}: unknown key {key!r} in [{section}]; allowed: {allowed}")
            merged[(section, key)] = RawValue(value, where)
    return merged


def build(raw: Mapping[tuple[str, str], RawValue], sources: tuple[Path, ...] = ()) -> Config:
    """Parse every setting (given or default) into a Config."""
    parsed: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for setting in SETTINGS:
        given = raw.get((setting.section, setting.key))
        text = given.value if given else setting.default
        try:
            parsed[setting.section][setting.key] = setting.parse(text)
        except ValueError as err:
            where = given.origin if given else "built-in default"
            raise ConfigError(f"{where}: [{setting.section}] {setting.key} = {text!r}: {err}") from None
    kube = parsed["kubernetes"]
    if not kube["node_name"]:
        kube["node_name"] = socket.gethostname()
    return Config(
        torcx=TorcxSettings(**parsed["torcx"]),
        kubernetes=KubernetesSettings(**kube),
        bootstrap=BootstrapSettings(**parsed["bootstrap"]),
        network=NetworkSettings(**parsed["network"]),
        units=UnitSettings(**parsed["units"]),
        metrics=MetricsSettings(**parsed["metrics"]),
        sources=sources,
    )


def config_files(main: Path = CONFIG_FILE, dropin_dir: Path = CONFIG_DROPIN_DIR) -> list[Path]:
    """The files that make up the configuration, in the order they apply."""
    files = [main] if main.is_file() else []
    if dropin_dir.is_dir():
        files.extend(sorted(p for p in dropin_dir.glob("*.conf") if p.is_file()))
    return files


def load(main: Path = CONFIG_FILE, dropin_dir: Path = CONFIG_DROPIN_DIR) -> Config:
    """Read and validate the configuration of this node."""
    files = config_files(main, dropin_dir)
    documents = []
    for path in files:
        try:
            documents.append((str(path), path.read_text()))
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot read: {err}") from None
    return build(collect(documents), tuple(files))


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
            out.append(f"# {setting.help}")
            out.append(f"#{setting.key} = {setting.default}")
    return "\n".join(out) + "\n"
