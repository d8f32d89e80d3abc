"""The one exception type every module raises for a known failure.

Entry points turn it into a one-line journal message and a non-zero exit;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TorcxTectonicError(Exception):
    """A failure the operator can act on: the message says what, where and
    what was expected."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(TorcxTectonicError):
    """A configuration file or value is invalid."""


class InputError(TorcxTectonicError):
    """A file or document from outside (manifest, mappings, kubeconfig,
    os-release, kubelet.env) is malformed."""


class VerificationError(TorcxTectonicError):
    """A signature or hash does not match: the data must not be used."""


class NetworkError(TorcxTectonicError):
    """A remote (bucket, api-server) could not be reached or answered badly."""
