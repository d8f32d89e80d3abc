"""The node's answer in Kubernetes: the labels and the annotation it writes on its own Node.

``kubectl get nodes -L torcx-tectonic.io/runtime,torcx-tectonic.io/next-boot``
is the fleet view, ``-l torcx-tectonic.io/next-boot=not-ok`` the worklist.
What the labels say is a pure function of the verdicts ``torcx-tectonic
status`` computes (never a second computation), and every value is checked
against Kubernetes' grammar of label values before anything is sent: an
invalid one is an error naming it and the rule, and nothing is patched.
The keys are under our own prefix: the NodeRestriction admission plugin
lets a node label itself except under the kubernetes.io and k8s.io ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..edges.inputfile import grammar
from ..errors import InputError

PREFIX = "torcx-tectonic.io"
#: ``<runtime>-<version>`` of the runtime running now; absent when that is not known.
RUNTIME = f"{PREFIX}/runtime"
#: ``ok`` or ``not-ok``: whether the next boot runs a runtime its Kubernetes accepts.
NEXT_BOOT = f"{PREFIX}/next-boot"
#: The next-boot verdict's reason, in words (annotations have no grammar to fit).
REASON = f"{PREFIX}/reason"
OK, NOT_OK = "ok", "not-ok"

#: A label value as Kubernetes validates it (apimachinery's IsValidLabelValue); empty is allowed there,
#: never written here.
LABEL_VALUE = grammar(
    "a Kubernetes label value: at most 63 characters, letters, digits, '-', '_' and '.', beginning and ending "
    "with a letter or digit",
    r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?",
    63,
)


@dataclass(frozen=True)
class NodeMetadata:
    """What the node writes on its Node object: only these keys; None
    removes a key (a JSON merge patch's null)."""

    labels: Mapping[str, str | None]
    annotations: Mapping[str, str | None]

    def patch(self) -> dict[str, object]:
        """The merge patch that sets exactly these keys and touches no other."""
        return {"metadata": {"labels": dict(self.labels), "annotations": dict(self.annotations)}}


def node_metadata(*, runtime: str, running: str | None, next_ok: bool, reason: str) -> NodeMetadata:
    """The labels and annotation for a node that runs ``running`` of
    ``runtime`` now (None: not known) and whose next-boot verdict is
    ``next_ok`` because of ``reason``. An invalid label value is an
    InputError naming the value, the label and the rule."""
    runtime_value = f"{runtime}-{running}" if running is not None else None
    labels = {RUNTIME: runtime_value, NEXT_BOOT: OK if next_ok else NOT_OK}
    for key, value in labels.items():
        if value is not None and not LABEL_VALUE.matches(value):
            raise InputError(f"node label {key}={value!r} ({len(value)} characters) is not a valid label value; "
                             f"expected {LABEL_VALUE.expected}: nothing was patched")
    return NodeMetadata(labels=labels, annotations={REASON: reason})
