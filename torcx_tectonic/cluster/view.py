"""The cluster as a node sees it: the api-server when it answers, the
installer's files when it does not.

A new cluster's api-server may not be up yet while its first nodes
bootstrap, so the Kubernetes version and the runtime mappings fall back to
what the installer left on the node (docs/design.md, 'The platform facts it relies on'). A step
that finds no api-server listening at all (the connection refused, or not
made in time) records it for its run: the later steps of the same run fall
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
from ..state import ApiServerUnreachable, FlowState, StateError
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


def client(config: Config, state: FlowState | None = None) -> KubeClient | None:
    """A client for the api-server, or None when there is no kubeconfig, or
    (given the run's ``state``) when an earlier step of the run found no
    api-server; such a client gives up early on a connection it cannot make."""
    path = config.kubernetes.kubeconfig
    if not path.exists():
        log.warning("no kubeconfig at %s: cannot ask the api-server", path)
        return None
    if state is not None:
        fact = state.fact(ApiServerUnreachable)
        if fact is not None:
            log.warning("the api-server %s could not be reached earlier in this run (%s, at step %s): not asking "
                        "it again", fact.server, fact.reason, fact.step)
            return None
    from .kube import KubeClient, load_kubeconfig  # requests: only when the api-server is asked

    connect_retries = FALLBACK_CONNECT_RETRIES if state is not None else None
    return KubeClient(load_kubeconfig(path), config.network, connect_retries=connect_retries)


def _fell_back(state: FlowState | None, api: KubeClient, err: NetworkError) -> None:
    """After a failed request: when no connection could be made at all,
    remember for the run that the api-server is not there (a step run
    outside a run has nowhere to keep it: it only falls back itself)."""
    if state is None or not isinstance(err, UnreachableError):
        return
    try:
        state.save(ApiServerUnreachable(server=api.creds.server, reason=str(err), step=state.step or "?"))
    except (StateError, OSError) as failed:
        log.warning("cannot keep for the later steps that the api-server is unreachable: %s", failed)


def cluster_version(config: Config, state: FlowState | None = None) -> tuple[str, str]:
    """The api-server's version and where it came from, else the installer's."""
    api = client(config, state)
    if api is not None:
        with api:
            try:
                return api.version(), f"api-server {api.creds.server}"
            except NetworkError as err:
                log.warning("%s; using the installer's kubelet version", err)
                _fell_back(state, api, err)
    path = config.kubernetes.installer_kubelet_env
    return kubeletenv.kubelet_version(path), str(path)


def runtime_mappings(config: Config, state: FlowState | None = None) -> RuntimeMappings:
    """The cluster's ConfigMap, falling back to the node-local file."""
    addon = runtime_name(config)
    api = client(config, state)
    if api is not None:
        with api:
            try:
                text = api.configmap_value(MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
            except NetworkError as err:
                log.warning("%s; using the node-local runtime mappings", err)
                _fell_back(state, api, err)
            else:
                if text is not None:
                    return parse_mappings(text, f"ConfigMap {MAPPINGS_NAMESPACE}/{MAPPINGS_CONFIGMAP}", addon)
                log.warning("ConfigMap %s/%s has no %s; using the node-local runtime mappings",
                            MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
    return local_mappings(config)


def local_mappings(config: Config) -> RuntimeMappings:
    path = config.kubernetes.runtime_mappings
    found = load_mappings(path, runtime_name(config))
    if found is None:
        raise InputError(f"no runtime mappings: the ConfigMap is unavailable and {path} does not exist")
    return found
