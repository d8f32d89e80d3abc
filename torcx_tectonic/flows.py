"""The flows and their steps: the one table everything else follows.

A step declares everything about its unit: the libexec entry point and the
function it runs, whether it needs the network, its timeout policy, whether
it retries, whether it holds the flow lock, its unit conditions and what is
started when it succeeds. The generator is a loop over this table, the step
runner finds a step's function and parameters here, and the tests iterate
it. Only plain classes and strings: the generator imports this at every boot
(and reads the configuration's paths as text, which needs no pathlib).
"""

from __future__ import annotations

from os.path import dirname

from .directives import escape
from .paths import (
    CACHE_DIR,
    DOCKER_DATA,
    DOCKER_RESET_MARKER,
    EXTENSIONS_DIR,
    IMAGE_STORE,
    NEXT_PROFILE,
    RUNS_DIR,
    STATE_DIR,
    UPDATE_ENGINE_MARKER,
    USER_STORE,
    backoff_file,
    flow_state_dir,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .config import Config

BOOTSTRAP = "bootstrap"
NEW_OS = "new-os"
NEW_KUBELET = "new-kubelet"
FOLLOW_API_SERVER = "follow-api-server"
DOCKER_RESET = "docker-reset"
NODE_LABELS = "node-labels"
#: Not a flow of units: the run record ``torcx-tectonic rollback`` leaves, which the status shows beside them.
ROLLBACK = "rollback"

#: What every step writes: its flow's records and lock (this boot) and run records.
STATE_WRITES = (STATE_DIR, dirname(RUNS_DIR))
#: What the Docker steps write: the verified manifests; the stores, profiles and the reset marker.
MANIFEST_CACHE = (CACHE_DIR,)
TORCX = (dirname(USER_STORE), dirname(NEXT_PROFILE), dirname(DOCKER_RESET_MARKER))
#: What the sysext steps write: the links systemd-sysext merges and the image store.
EXTENSIONS = (EXTENSIONS_DIR, dirname(IMAGE_STORE), dirname(DOCKER_RESET_MARKER), CACHE_DIR)
#: How deep below a directory the steps write they make directories of their own (the flows'
#: state, the versioned stores, the profiles, the image store, the cache's kinds and boards).
NESTED_DEPTH = {STATE_DIR: 1, dirname(RUNS_DIR): 1, CACHE_DIR: 2, dirname(USER_STORE): 2, dirname(NEXT_PROFILE): 1,
                dirname(IMAGE_STORE): 2}
#: The service manager checks this capability before it enables, starts or reboots for a caller.
MANAGE_UNITS = ("CAP_SYS_ADMIN",)

#: update_engine is a plain unit on Flatcar and Container Linux, not started by D-Bus
#: activation: a step that asks it for an update starts after it (and does not start
#: it: a masked engine stays masked).
AFTER_UPDATE_ENGINE = (("update-engine.service", "update_engine has no D-Bus activation: ask it after its unit "
                                                 "started (After= only: a masked engine is not started)"),)

#: The units of the container runtime that a Docker data reset must precede.
DOCKER_UNITS = ("docker.service", "containerd.service")

# Timeout policies (seconds are computed from the configuration by timeout_secs).
LOCAL = "local"  # files and the local systemd only
REQUESTS = "requests"  # a few requests to the api-server or the bucket, no step retries
RETRIED = "retried"  # network work retried inside the step
OS_UPDATE = "os-update"  # waits for update_engine, attempt after attempt
LABEL_WAIT = "label-wait"  # waits for the update operator's label, retried
TIMEOUT_POLICIES = (LOCAL, REQUESTS, RETRIED, OS_UPDATE, LABEL_WAIT)

#: Seconds a step without network or D-Bus waits may take at most.
LOCAL_STEP_TIMEOUT_SECS = 300
#: Extra seconds on top of the configured waits, for the work around them.
MARGIN_SECS = 300
#: Requests one network step makes at most per attempt (manifests, signatures, ConfigMap, version).
REQUESTS_PER_ATTEMPT = 4

#: The function behind each libexec entry point ("module:function" in torcx_tectonic.steps).
ENTRY_POINTS = {
    "next-os": "nextos:os_versions",
    "kubelet-version": "kubeversion:kubernetes_version",
    "docker-version": "runtime:choose_runtime",
    "install-addons": "addons:install_addons",
    "gc-stores": "addons:collect_stores",
    "kubelet-env": "bootstrap:write_kubelet_env",
    "finish-bootstrap": "bootstrap:finish",
    "annotate-node": "annotation:annotate",
    "recheck-kubelet": "kubeversion:recheck",
    "docker-reset": "dockerreset:reset_step",
    "extension-version": "extension:choose_image",
    "install-extension": "extension:install_extension",
    "gc-extensions": "extension:collect_images",
    "node-labels": "labels:label_node",
    "kubelet-image-version": "kubeletimage:choose_kubelet_image",
    "install-kubelet-image": "kubeletimage:install_kubelet_image",
    "follow-api-server": "kubeletimage:follow_api_server",
}

#: How often a node with the kubelet's image asks the api-server for its version (systemd time spans).
FOLLOW_FIRST = "15min"
FOLLOW_EVERY = "1h"


def step_unit(flow: str, step: str) -> str:
    return f"torcx-{flow}-{step}.service"


class Step:
    """One oneshot unit of a flow, and what it may touch: the paths it
    writes, whether it talks to the network or the system bus, and the
    capabilities it needs; the generator turns that into the unit's sandbox."""

    __slots__ = ("after", "bus", "capabilities", "conditions", "description", "entry", "followed_by", "images",
                 "locked", "mounts", "name", "network", "params", "retry", "timeout", "writes")

    def __init__(self, name: str, description: str, entry: str, *, params: dict[str, object] | None = None,
                 network: bool = False, bus: bool = False, timeout: str = LOCAL, retry: bool = False,
                 locked: bool = True, conditions: tuple[str, ...] = (), after: tuple[tuple[str, str], ...] = (),
                 followed_by: str | None = None, mounts: tuple[str, ...] = (), writes: tuple[str, ...] = (),
                 capabilities: tuple[str, ...] = (), images: bool = False) -> None:
        if entry not in ENTRY_POINTS or timeout not in TIMEOUT_POLICIES:
            raise ValueError(f"step {name}: unknown entry point {entry!r} or timeout policy {timeout!r}")
        self.name = name
        self.description = description
        #: the libexec script, whose function ENTRY_POINTS names
        self.entry = entry
        #: keyword arguments of that function for this step
        self.params = params or {}
        #: talks to the api-server or the release bucket
        self.network = network
        #: talks to a service on the system bus (update_engine, the service manager)
        self.bus = bus
        self.timeout = timeout
        #: try again after a failure ([units] retry_attempts, retry_delay) inside the unit
        self.retry = retry
        #: hold the flow lock (no other flow runs meanwhile)
        self.locked = locked
        #: unit lines that decide whether the step runs at all
        self.conditions = conditions
        #: (unit, why): units the step starts after when they start too; ordering only, nothing is pulled in
        self.after = after
        #: a unit started with this one and run after it ends, however it ends
        self.followed_by = followed_by
        #: paths whose mounts the step needs (a separate /var/lib/docker, say)
        self.mounts = mounts
        #: what the step changes on the node, beyond the flow's state (STATE_WRITES)
        self.writes = writes
        #: capabilities it keeps (none by default: root's files need none)
        self.capabilities = capabilities
        #: opens disk images (systemd-dissect: loop devices, a private mount)
        self.images = images


class PathTrigger:
    """A path unit that starts ``unit`` when ``path`` appears or changes."""

    __slots__ = ("conditions", "description", "directive", "path", "unit")
    #: the trigger unit's type (its suffix and section)
    kind = "path"

    def __init__(self, description: str, directive: str, path: str, unit: str,
                 conditions: tuple[str, ...] = ()) -> None:
        self.description = description
        self.directive = directive
        self.path = path
        self.unit = unit
        self.conditions = conditions

    def lines(self) -> tuple[str, ...]:
        return (f"{self.directive}={self.path}", f"Unit={self.unit}")


class TimerTrigger:
    """A timer unit that starts ``unit`` ``first`` after it starts, then
    ``every`` after the unit last ran."""

    __slots__ = ("conditions", "description", "every", "first", "unit")
    kind = "timer"

    def __init__(self, description: str, first: str, every: str, unit: str, conditions: tuple[str, ...] = ()) -> None:
        self.description = description
        self.first = first
        self.every = every
        self.unit = unit
        self.conditions = conditions

    def lines(self) -> tuple[str, ...]:
        return (f"OnActiveSec={self.first}", f"OnUnitActiveSec={self.every}", f"Unit={self.unit}")


class Flow:
    """A flow: its steps run in order, each bound to the one before, and
    together they make one run (the first step begins it, the last ends it).
    ``followers`` are units that run after the run ended (``followed_by``)."""

    __slots__ = ("after", "backoff", "before", "before_target", "description", "followers", "lock_conditions",
                 "name", "steps", "target", "trigger", "wanted_by")

    def __init__(self, name: str, description: str, steps: tuple[Step, ...], *, target: bool = False,
                 before_target: bool = False, trigger: PathTrigger | TimerTrigger | None = None,
                 lock_conditions: tuple[str, ...] = (), wanted_by: tuple[str, ...] = (),
                 before: tuple[str, ...] = (), followers: tuple[Step, ...] = (), after: tuple[str, ...] = (),
                 backoff: bool = False) -> None:
        self.name = name
        self.description = description
        self.steps = steps
        #: torcx-<flow>.target requires every step, so starting it runs the flow
        self.target = target
        #: the target is reached only when every step ended
        self.before_target = before_target
        self.trigger = trigger
        #: conditions of this flow's lock instance (it must skip when the steps do)
        self.lock_conditions = lock_conditions
        #: units that pull in the flow's steps when they start
        self.wanted_by = wanted_by
        #: units that start only after the flow's steps ended
        self.before = before
        self.followers = followers
        #: units whose runs end before the flow's steps start (when both start together)
        self.after = after
        #: a failed run is tried again only after a pause that grows with each failure in a row
        #: ([units] backoff_delay): the target only wants the steps (a failure leaves it reached, so the
        #: path unit does not start the run again), and the flow's retry unit waits for the next try
        self.backoff = backoff

    @property
    def unit_prefix(self) -> str:
        return f"torcx-{self.name}"

    @property
    def target_unit(self) -> str:
        return f"{self.unit_prefix}.target"

    def unit(self, step: Step) -> str:
        return step_unit(self.name, step.name)

    @property
    def trigger_unit(self) -> str | None:
        """The path or timer unit that starts the flow (None: none does)."""
        return None if self.trigger is None else f"{self.unit_prefix}.{self.trigger.kind}"

    @property
    def lock_unit(self) -> str:
        return f"torcx-tectonic-lock@{self.name}.service"

    @property
    def retry_unit(self) -> str:
        """The unit that starts the flow again at its next try (with ``backoff``)."""
        return f"{self.unit_prefix}-retry.service"

    @property
    def backoff_file(self) -> str:
        return backoff_file(self.name)

    def step(self, name: str) -> Step | None:
        return next((s for s in (*self.steps, *self.followers) if s.name == name), None)

    def begins_run(self, step: Step) -> bool:
        return step is self.steps[0]

    def ends_run(self, step: Step) -> bool:
        return step is self.steps[-1]

    def follows_run(self, step: Step) -> bool:
        return step in self.followers


class StepRow:
    """The fixed part of a backend's step; each flow completes it with its
    conditions, its timeout policy and what follows it."""

    __slots__ = ("capabilities", "description", "entry", "images", "name", "writes")

    def __init__(self, name: str, description: str, entry: str, *, writes: tuple[str, ...] = (),
                 capabilities: tuple[str, ...] = (), images: bool = False) -> None:
        self.name = name
        self.description = description
        self.entry = entry
        self.writes = writes
        self.capabilities = capabilities
        self.images = images

    def step(self, *, suffix: str = "", **flow_part: Any) -> Step:
        return Step(self.name, self.description + suffix, self.entry, writes=self.writes,
                    capabilities=self.capabilities, images=self.images, **flow_part)


class ImageSteps:
    """An image a backend keeps beside the runtime (the kubelet's): the step
    that chooses its version, the one that puts it in place, and the record
    of that one (what the bootstrap's finish reads)."""

    __slots__ = ("choose", "install", "installs")

    def __init__(self, *, choose: StepRow, install: StepRow, installs: str) -> None:
        self.choose = choose
        self.install = install
        self.installs = installs


class RuntimeBackend:
    """What a runtime backend brings to the flows: the step that chooses the
    runtime version, the one that puts it in place for the OS versions, its
    GC, and the record of its install step (what the bootstrap's finish reads).
    ``kubelet`` is the same for the kubelet's image, where the backend can
    keep one (``[sysext] kubernetes``)."""

    __slots__ = ("choose", "gc", "install", "installs", "kubelet", "name")

    def __init__(self, name: str, *, choose: StepRow, install: StepRow, gc: StepRow, installs: str,
                 kubelet: ImageSteps | None = None) -> None:
        self.name = name
        self.choose = choose
        self.install = install
        self.gc = gc
        self.installs = installs
        self.kubelet = kubelet


#: The runtime backends by the name ``[runtime] backend`` gives.
RUNTIME_BACKENDS = {backend.name: backend for backend in (
    RuntimeBackend(
        "torcx",
        choose=StepRow("docker-version", "Compute the Docker version", "docker-version", writes=MANIFEST_CACHE),
        install=StepRow("addons", "Fetch the Docker torcx addons and select them", "install-addons", writes=TORCX),
        gc=StepRow("gc", "Remove versioned torcx stores older than the running OS", "gc-stores",
                   writes=(dirname(USER_STORE),)),
        installs="addons"),
    RuntimeBackend(
        "sysext",
        choose=StepRow("runtime-version", "Choose the runtime image", "extension-version", writes=MANIFEST_CACHE),
        install=StepRow("extension", "Fetch the runtime image, check it fits the OS versions, link it",
                        "install-extension", writes=EXTENSIONS, capabilities=MANAGE_UNITS, images=True),
        gc=StepRow("gc", "Remove runtime images beyond the ones kept", "gc-extensions", writes=EXTENSIONS),
        installs="extension",
        kubelet=ImageSteps(
            choose=StepRow("kubelet-image-version", "Choose the kubelet image", "kubelet-image-version",
                           writes=MANIFEST_CACHE),
            install=StepRow("kubelet-image", "Fetch the kubelet image, check it fits the OS versions, link it",
                            "install-kubelet-image", writes=EXTENSIONS, capabilities=MANAGE_UNITS, images=True),
            installs="kubelet-extension")),
)}


def runtime_backend(config: Config) -> RuntimeBackend:
    return RUNTIME_BACKENDS[config.runtime.backend]


def kubelet_image(config: Config) -> ImageSteps | None:
    """The kubelet image's steps, when the backend keeps one and is told to."""
    kubelet = runtime_backend(config).kubelet
    return kubelet if kubelet is not None and config.sysext.kubernetes else None


def runtime_steps(config: Config, *, next_os: bool, conditions: tuple[str, ...] = (),
                  followed_by: str | None = None) -> list[Step]:
    """The steps that choose the runtime version and put it in place, for
    the configured backend; with the kubelet's image, its version is chosen
    first (the runtime follows its minor) and it is put in place last."""
    backend, kubelet = runtime_backend(config), kubelet_image(config)
    choose = [*((kubelet.choose,) if kubelet else ()), backend.choose]
    install = [backend.install, *((kubelet.install,) if kubelet else ())]
    suffix = " for the next OS" if next_os else ""
    return [
        *(row.step(suffix=suffix, network=True, timeout=RETRIED, retry=True, conditions=conditions) for row in choose),
        *(row.step(network=True, timeout=RETRIED, retry=True, conditions=conditions,
                   followed_by=followed_by if row is install[-1] else None) for row in install),
    ]


def bootstrap_flow(config: Config) -> Flow:
    """Bootstrap, in the seed's order; configuration decides what runs. Every
    step but the last skips once kubelet.env exists (the node is bootstrapped);
    the last runs only after a run began in this boot."""
    boot = config.bootstrap
    kubelet_env = config.kubernetes.path_text("kubelet_env")
    pending = (f"ConditionPathExists=!{escape(kubelet_env)}",)
    steps = [
        Step("os-update", "Update the OS before configuring torcx" if boot.upgrade_os else "Read the pending OS update",
             "next-os", params={"attempt_update": boot.upgrade_os, "engine_optional": not boot.upgrade_os},
             bus=True, timeout=OS_UPDATE if boot.upgrade_os else REQUESTS, conditions=pending,
             after=AFTER_UPDATE_ENGINE),
        Step("kubelet-version", "Determine the Kubernetes version", "kubelet-version", params={"source": "cluster"},
             network=True, timeout=REQUESTS, conditions=pending),
    ]
    if not boot.skip_torcx:
        steps += runtime_steps(config, next_os=False, conditions=pending)
    steps += [
        # it enables the kubelet before it writes kubelet.env, the file that ends bootstrapping
        Step("kubelet-env", "Set the kubelet version", "kubelet-env", bus=True, capabilities=MANAGE_UNITS,
             conditions=pending, writes=(dirname(kubelet_env),)),
        Step("finish", "Enable the kubelet and reboot when needed", "finish-bootstrap", bus=True,
             params={"installs": None if boot.skip_torcx else runtime_backend(config).installs,
                     **({"kubelet": kubelet.installs} if (kubelet := kubelet_image(config)) and not boot.skip_torcx
                        else {})},
             capabilities=MANAGE_UNITS, conditions=(f"ConditionPathIsDirectory={flow_state_dir(BOOTSTRAP)}",)),
    ]
    return Flow(BOOTSTRAP, "Bootstrap torcx and the kubelet", tuple(steps), target=True, before_target=True,
                lock_conditions=pending)


def new_os_flow(config: Config) -> Flow:
    marker = (f"ConditionPathExists={UPDATE_ENGINE_MARKER}",)
    gc = runtime_backend(config).gc.step(conditions=marker)
    return Flow(NEW_OS, "Prepare the runtime for the next OS", (
        Step("os-version", "Determine the next OS version", "next-os", bus=True, timeout=REQUESTS),
        Step("kubelet-version", "Read the kubelet version", "kubelet-version", params={"source": "kubelet-env"}),
        *runtime_steps(config, next_os=True),
        gc,
        Step("annotate", "Tell the update operator this node may reboot", "annotate-node", network=True,
             timeout=LABEL_WAIT, retry=True, locked=False, conditions=marker,
             params={"after": runtime_backend(config).installs}),
    ), target=True, trigger=PathTrigger(
        "Prepare the runtime when an OS update waits for a reboot", "PathExists", UPDATE_ENGINE_MARKER,
        "torcx-new-os.target", conditions=_bootstrapped(config)),
        # the marker stays while the update waits, so the path unit would start a failed run again at once
        backoff=True)


def new_kubelet_flow(config: Config) -> Flow:
    """A kubelet.env change that arrives while this flow runs only merges into
    the running job: the recheck that follows a run starts it again then."""
    steps = [
        Step("kubelet-version", "Read the new kubelet version", "kubelet-version", params={"source": "kubelet-env"}),
        Step("os-version", "Determine the OS versions", "next-os", bus=True, timeout=REQUESTS),
        *runtime_steps(config, next_os=False, followed_by=step_unit(NEW_KUBELET, "recheck")),
    ]
    last = step_unit(NEW_KUBELET, steps[-1].name)
    return Flow(NEW_KUBELET, "Follow a new kubelet version with its runtime", tuple(steps),
                trigger=PathTrigger("Follow kubelet.env changes with the runtime", "PathChanged",
                                    escape(config.kubernetes.path_text("kubelet_env")), last,
                                    conditions=_bootstrapped(config)),
                followers=(Step("recheck", "Run again if kubelet.env changed meanwhile", "recheck-kubelet",
                                params={"anchor": last}, locked=False, bus=True, capabilities=MANAGE_UNITS),))


def follow_api_server_flow(config: Config) -> Flow:
    """A node that keeps the kubelet's image follows control-plane upgrades:
    a timer asks the api-server for its version and moves kubelet.env's
    version one minor at a time, never past it; the new-kubelet flow then
    links the kubelet's image and the runtime of its minor."""
    return Flow(FOLLOW_API_SERVER, "Follow the api-server's version with the kubelet", (
        Step("follow", "Move kubelet.env towards the api-server's version", "follow-api-server", network=True,
             timeout=RETRIED, retry=True, conditions=_bootstrapped(config),
             writes=(escape(dirname(config.kubernetes.path_text("kubelet_env"))), *MANIFEST_CACHE)),
    ), target=True, before_target=True, trigger=TimerTrigger(
        "Compare the api-server's version with the kubelet's", FOLLOW_FIRST, FOLLOW_EVERY,
        f"torcx-{FOLLOW_API_SERVER}.target", conditions=_bootstrapped(config)))


def docker_reset_flow(config: Config) -> Flow:
    """Empty /var/lib/docker before a different Docker starts (at the boot
    after the selected Docker changed: the addon step leaves the marker)."""
    return Flow(DOCKER_RESET, "Empty Docker's data before a different Docker starts", (
        Step("data", "Empty /var/lib/docker before a different Docker version starts", "docker-reset",
             locked=False, conditions=(f"ConditionPathExists={DOCKER_RESET_MARKER}",), mounts=(DOCKER_DATA,),
             # the data directory is renamed away whole (so a kill leaves old data or none), which needs its
             # parent; Docker's files belong to many users
             writes=(dirname(DOCKER_DATA),),
             capabilities=("CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER")),
    ), wanted_by=DOCKER_UNITS, before=(*DOCKER_UNITS, "docker.socket"))


def node_labels_flow(config: Config, others: tuple[Flow, ...]) -> Flow:
    """Label the node with its answer after every run of the ``others`` and
    at boot (the runtime that runs changes at a boot). Its own flow, so that
    nothing waits for it: the first step of a flow pulls it in, and it runs
    once the flow's steps ended, however they ended, but not after a step
    that waits for someone else (the operator's label may take an hour; the
    verdicts do not change with it)."""
    triggered = [f for f in others if f.trigger is not None or f.target]
    return Flow(NODE_LABELS, "Tell the cluster what the node runs", (
        Step("patch", "Label the node with its runtime and whether its next boot is ok", "node-labels",
             network=True, timeout=REQUESTS, locked=False, conditions=_bootstrapped(config)),
    ), wanted_by=("multi-user.target", *(f.unit(f.steps[0]) for f in triggered)),
        after=tuple(f.unit(s) for f in others for s in f.steps if s.timeout != LABEL_WAIT))


def _bootstrapped(config: Config) -> tuple[str, ...]:
    """Only a bootstrapped node follows changes; the bootstrap starts the
    path units itself when it ends without a reboot."""
    return (f"ConditionPathExists={escape(config.kubernetes.path_text('kubelet_env'))}",)


def all_flows(config: Config) -> tuple[Flow, ...]:
    follow = (follow_api_server_flow(config),) if kubelet_image(config) else ()
    flows = (bootstrap_flow(config), new_os_flow(config), new_kubelet_flow(config), *follow,
             docker_reset_flow(config))
    return (*flows, node_labels_flow(config, flows)) if config.kubernetes.node_labels else flows


def find_step(config: Config, flow_name: str, step_name: str) -> tuple[Flow, Step] | None:
    for flow in all_flows(config):
        if flow.name == flow_name:
            step = flow.step(step_name)
            return (flow, step) if step is not None else None
    return None


def written_directories(config: Config) -> dict[str, int]:
    """Every directory a step of the flows may write files into, with how
    deep below it the steps make directories. Each step's sandbox names its
    own from the table, and the clean-up sweeps them all from here."""
    found = {path: NESTED_DEPTH.get(path, 0) for path in STATE_WRITES}
    for flow in all_flows(config):
        for step in (*flow.steps, *flow.followers):
            for path in step.writes:
                found.setdefault(path, NESTED_DEPTH.get(path, 0))
    return found


def path_units(config: Config) -> tuple[str, ...]:
    """The path and timer units that follow a bootstrapped node."""
    return tuple(unit for flow in all_flows(config) if (unit := flow.trigger_unit) is not None)


def timeout_secs(step: Step, config: Config) -> int:
    """How long systemd lets the step's unit run: what its policy may wait
    for, with the configured retries, plus a margin."""
    from .config import total_retry_delay

    net, units = config.network, config.units
    per_request = (net.connect_timeout + net.read_timeout) * (net.retries + 1)
    retry_pauses = total_retry_delay(units)
    if step.timeout == OS_UPDATE:
        boot = config.bootstrap
        return int(boot.os_update_timeout * max(boot.os_update_attempts, 1) + MARGIN_SECS)
    if step.timeout == LABEL_WAIT:
        return int((config.kubernetes.label_timeout + per_request) * units.retry_attempts + retry_pauses + MARGIN_SECS)
    if step.timeout == RETRIED:
        return int(per_request * REQUESTS_PER_ATTEMPT * units.retry_attempts + retry_pauses + MARGIN_SECS)
    if step.timeout == REQUESTS:
        return int(per_request * REQUESTS_PER_ATTEMPT + MARGIN_SECS)
    return LOCAL_STEP_TIMEOUT_SECS
