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


class NothingToRollBack(TorcxTectonicError):
    """No earlier runtime version is recorded, or it is no longer on the
    node: a rollback changes nothing."""


class VerificationError(TorcxTectonicError):
    """A signature or hash does not match: the data must not be used."""


class NetworkError(TorcxTectonicError):
    """A remote (bucket, api-server) could not be reached or answered badly."""


class UnreachableError(NetworkError):
    """No connection could be made at all (refused, timed out, no route): nothing
    answers at that address, as opposed to a server that answered badly or slowly."""


class LocalFileMissing(NetworkError):
    """A file:// URL names no file: the local mirror lacks it. No network is
    in between, so waiting does not bring it, as it can bring a bucket's
    answer: a step fails at once rather than trying again."""


#: How much of an outside value a message quotes.
SHOWN_CHARS = 80


def shown(value: object) -> str:
    """An outside value as a message quotes it: short and on one line.

    A document can be megabytes, deeply nested or (as YAML) far larger once
    built than its text; rendering it whole into an error would cost more
    memory and time than reading it did, so containers are named by kind and
    long text is cut.
    """
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return "a very large number"
    if value is None or isinstance(value, (str, bytes, int, float)):
        text = repr(value[:SHOWN_CHARS] if isinstance(value, (str, bytes)) else value)
        return text + "…" if isinstance(value, (str, bytes)) and len(value) > SHOWN_CHARS else text
    return f"a {type(value).__name__}"
