"""The three flows and their steps, as plain data.

The generator turns these into units; nothing here imports more than the
standard library and the configuration, so the generator stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config

BOOTSTRAP = "bootstrap"
NEW_OS = "new-os"
NEW_KUBELET = "new-kubelet"
#: Path units that follow a bootstrapped node (emitted by the generator).
PATH_UNITS = ("torcx-new-os.path", "torcx-new-kubelet.path")


@dataclass(frozen=True)
class Step:
    """One oneshot unit: ``name`` is unique in its flow, ``script`` is the
    libexec entry point and ``args`` its arguments."""

    name: str
    description: str
    script: str
    args: tuple[str, ...] = ()
    retry: bool = False
    locked: bool = True


@dataclass(frozen=True)
class Flow:
    name: str
    description: str
    steps: tuple[Step, ...]

    @property
    def unit_prefix(self) -> str:
        return f"torcx-{self.name}"

    def unit(self, step: Step) -> str:
        return f"{self.unit_prefix}-{step.name}.service"

    @property
    def lock_unit(self) -> str:
        return f"torcx-tectonic-lock@{self.name}.service"


def bootstrap_flow(config: Config) -> Flow:
    """Bootstrap, in the seed's order; configuration decides what runs."""
    boot = config.bootstrap
    steps = [
        Step("os-update", "Update the OS before configuring torcx" if boot.upgrade_os else "Read the pending OS update",
             "next-os", ("--attempt-update",) if boot.upgrade_os else ()),
        Step("kubelet-version", "Determine the Kubernetes version", "kubelet-version", ("--source", "cluster")),
    ]
    if not boot.skip_torcx:
        steps += [
            Step("docker-version", "Compute the Docker version", "docker-version", retry=True),
            Step("addons", "Fetch the Docker torcx addons and select them", "install-addons", retry=True),
        ]
    steps += [
        Step("kubelet-env", "Set the kubelet version", "kubelet-env"),
        Step("finish", "Enable the kubelet and reboot when needed", "finish-bootstrap"),
    ]
    return Flow(BOOTSTRAP, "Bootstrap torcx and the kubelet", tuple(steps))


def new_os_flow(config: Config) -> Flow:
    return Flow(NEW_OS, "Prepare torcx for the next OS", (
        Step("os-version", "Determine the next OS version", "next-os"),
        Step("kubelet-version", "Read the kubelet version", "kubelet-version", ("--source", "kubelet-env")),
        Step("docker-version", "Compute the Docker version for the next OS", "docker-version", retry=True),
        Step("addons", "Fetch the Docker addon for the next OS", "install-addons", retry=True),
        Step("gc", "Remove versioned torcx stores older than the running OS", "gc-stores"),
        Step("annotate", "Tell the update operator this node may reboot", "annotate-node", retry=True, locked=False),
    ))


def new_kubelet_flow(config: Config) -> Flow:
    return Flow(NEW_KUBELET, "Follow a new kubelet version with Docker", (
        Step("kubelet-version", "Read the new kubelet version", "kubelet-version", ("--source", "kubelet-env")),
        Step("os-version", "Determine the OS versions", "next-os"),
        Step("docker-version", "Compute the Docker version for the new kubelet", "docker-version", retry=True),
        Step("addons", "Fetch the Docker addon and select it", "install-addons", retry=True),
    ))


def all_flows(config: Config) -> tuple[Flow, ...]:
    return (bootstrap_flow(config), new_os_flow(config), new_kubelet_flow(config))
