"""The cluster as a node sees it: the api-server when it answers, the
installer's files when it does not.

A new cluster's api-server may not be up yet while its first nodes
bootstrap, so the Kubernetes version and the runtime mappings fall back to
what the installer left on the node (DESIGN §3, Kubernetes side).
"""

from __future__ import annotations

import logging

from . import kubeletenv
from .config import Config, runtime_name
from .errors import InputError, NetworkError
from .kube import MAPPINGS_CONFIGMAP, MAPPINGS_KEY, MAPPINGS_NAMESPACE, KubeClient, load_kubeconfig
from .mappings import RuntimeMappings, load_mappings, parse_mappings

log = logging.getLogger(__name__)


def client(config: Config) -> KubeClient | None:
    """A client for the api-server, or None when there is no kubeconfig."""
    path = config.kubernetes.kubeconfig
    if not path.exists():
        log.warning("no kubeconfig at %s: cannot ask the api-server", path)
        return None
    return KubeClient(load_kubeconfig(path), config.network)


def cluster_version(config: Config) -> tuple[str, str]:
    """The api-server's version and where it came from, else the installer's."""
    api = client(config)
    if api is not None:
        with api:
            try:
                return api.version(), f"api-server {api.creds.server}"
            except NetworkError as err:
                log.warning("%s; using the installer's kubelet version", err)
    path = config.kubernetes.installer_kubelet_env
    return kubeletenv.kubelet_version(path), str(path)


def runtime_mappings(config: Config) -> RuntimeMappings:
    """The cluster's ConfigMap, falling back to the node-local file."""
    addon = runtime_name(config)
    api = client(config)
    if api is not None:
        with api:
            try:
                text = api.configmap_value(MAPPINGS_NAMESPACE, MAPPINGS_CONFIGMAP, MAPPINGS_KEY)
            except NetworkError as err:
                log.warning("%s; using the node-local runtime mappings", err)
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
