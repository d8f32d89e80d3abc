"""The cluster as a node sees it: the api-server when it answers, the
installer's files when it does not.

A new cluster's api-server may not be up yet while its first nodes
bootstrap, so the Kubernetes version and the runtime mappings fall back to
what the installer left on the node (docs/design.md, 'The platform facts it relies on'). A step
that finds no api-server listening at all (the connection refused, or not
made in time) keeps that for its run: the later steps of the same run fall
back at once instead of paying the retries again. A server that answers,
even slowly or with errors, gets its configured retries every time.

The HTTP and YAML libraries are loaded only when a step talks to the
api-server or reads a mapping: most steps do neither.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..config import Config, runtime_name
from ..errors import InputError, NetworkError, UnreachableError
from ..node import kubeletenv
from ..state import ApiServerUnreachable
from .mappings import (
    MAPPINGS_CONFIGMAP,
    MAPPINGS_KEY,
    MAPPINGS_NAMESPACE,
    RuntimeMappings,
    load_mappings,
    parse_mappings,
)

if TYPE_CHECKING:
    from .kube import KubeClient

log = logging.getLogger(__name__)

#: Retries of a connection to the api-server that cannot be made at all, before
#: a step that can do without it falls back to the installer's files (each a
#: backoff pause apart: a refusing api-server costs about two seconds, not the
#: whole retry budget).
FALLBACK_CONNECT_RETRIES = 2
#: The annotation of the node's own Node object that pins its runtime version
#: (docs/design.md, 'Pins'); set with ``kubectl annotate node NAME KEY=VERSION``.
PIN_ANNOTATION = "torcx-tectonic.io/pin-runtime"
#: How the origin of a version the api-server gave begins.
API_SERVER = "api-server "


class Cluster:
    """The cluster as one step sees it. Inside a flow's run (``known`` is
    what its earlier steps learnt), a connection that cannot be made gives
    up early and is not tried again; ``unreachable`` is then what this step
    learnt, for the step to keep for the run."""

    def __init__(self, config: Config, *, in_run: bool = False, known: ApiServerUnreachable | None = None,
                 step: str = "?") -> None:
        self.config = config
        self.in_run = in_run
        self.known = known
        self.step = step
        self.unreachable: ApiServerUnreachable | None = None

    def client(self) -> KubeClient | None:
        """A client for the api-server; None without a kubeconfig, or when
        this run already found no api-server."""
        path = self.config.kubernetes.kubeconfig
        if not path.exists():
            log.warning("no kubeconfig at %s: cannot ask the api-server", path)
            return None
        if self.known is not None:
            log.warning("the api-server %s could not be reached earlier in this run (%s, at step %s): not asking "
                        "it again", self.known.server, self.known.reason, self.known.step)
            return None
        from .kube import KubeClient, load_kubeconfig  # requests: only when the api-server is asked

        connect_retries = FALLBACK_CONNECT_RETRIES if self.in_run else None
        return KubeClient(load_kubeconfig(path), self.config.network, connect_retries=connect_retries)

    def _failed(self, api: KubeClient, err: NetworkError) -> None:
        """After a failed request: inside a run, when no connection could be
        made at all, the api-server is not there for this run."""
        if self.in_run and isinstance(err, UnreachableError):
            self.unreachable = ApiServerUnreachable(server=api.creds.server, reason=str(err), step=self.step)

    def version(self) -> tuple[str, str]:
        """The api-server's version and where it came from, else the installer's."""
        api = self.client()
        if api is not None:
            with api:
                try:
                    return api.version(), f"{API_SERVER}{api.creds.server}"
                except NetworkError as err:
                    log.warning("%s; using the installer's kubelet version", err)
                    self._failed(api, err)
        path = self.config.kubernetes.installer_kubelet_env
        return kubeletenv.kubelet_version(path), str(path)

    def runtime_mappings(self) -> RuntimeMappings:
        """The cluster's ConfigMap, falling back to the node-local file."""
        api = self.client()
        if api is not None:
            with api:
                try:
                    text = api.configmap_value(MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
                except NetworkError as err:
                    log.warning("%s; using the node-local runtime mappings", err)
                    self._failed(api, err)
                else:
                    if text is not None:
                        return parse_mappings(text, f"ConfigMap {MAPPINGS_NAMESPACE}/{MAPPINGS_CONFIGMAP}",
                                              runtime_name(self.config))
                    log.warning("ConfigMap %s/%s has no %s; using the node-local runtime mappings",
                                MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
        return local_mappings(self.config)

    def node_annotation(self, key: str) -> tuple[str | None, str] | None:
        """The node's own annotation ``key`` (None when it has none) and
        where it was read; None when the api-server cannot be asked or does
        not answer with the node (the caller falls back, and says so)."""
        api = self.client()
        if api is None:
            return None
        name = self.config.kubernetes.node_name
        with api:
            try:
                return api.node_annotation(name, key), f"node {name} annotation {key}"
            except NetworkError as err:
                log.warning("%s; the annotation %s is not known", err, key)
                self._failed(api, err)
                return None


def client(config: Config) -> KubeClient | None:
    """A client for the api-server for a step that cannot do without it
    (the annotation): it always asks, with the configured retries."""
    return Cluster(config).client()


def local_mappings(config: Config) -> RuntimeMappings:
    path = config.kubernetes.runtime_mappings
    found = load_mappings(path, runtime_name(config))
    if found is None:
        raise InputError(f"no runtime mappings: the ConfigMap is unavailable and {path} does not exist")
    return found
