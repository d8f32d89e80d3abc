"""The answer to "will this node boot with the runtime its Kubernetes
needs?": what every backend is told about the node, and what it answers.

A backend reads its own part of the node (torcx's stores and profiles, or
the linked system extension image) and returns a RuntimeView; the status
command adds what is common (the flows' runs, the path units) and shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """For one OS version: the runtime version it will run when it boots,
    and whether that is right."""

    os: str | None
    ok: bool
    runtime_version: str | None
    reason: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facts:
    """What the backends are told: the OS versions, the Kubernetes version
    and the runtime versions it accepts."""

    runtime: str
    board: str | None
    current_os: str | None
    next_os: str | None
    kube_version: str | None
    wanted: tuple[str, ...]
    mapping_source: str
    #: the Docker reset the next boot does ("from → to"), None without one
    reset_pending: str | None = None


@dataclass(frozen=True)
class ImageVerdicts:
    """An image a backend keeps beside the runtime (the kubelet's): the
    verdict of the running and the next OS, who moves its link when not
    torcx-tectonic, and when a newly linked one takes over."""

    name: str
    current: Verdict
    next: Verdict | None
    #: what decides the image instead (a systemd-sysupdate transfer), None: torcx-tectonic
    managed_by: str | None = None
    #: when the linked image's binary runs, None: it runs already
    takes_over: str | None = None

    @property
    def ok(self) -> bool:
        return self.current.ok and (self.next is None or self.next.ok)


@dataclass(frozen=True)
class RuntimeView:
    """A backend's answer: the verdict of the running OS and of the next
    one (None when it is not told one), the runtime version running now and
    how that is known, and what it keeps, for the text and the JSON view."""

    current: Verdict
    next: Verdict | None
    booted: str | None
    booted_source: str
    #: the text view's sections of this backend: (title, lines)
    sections: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: the JSON view's keys of this backend
    document: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    #: the images the backend keeps beside the runtime, with their verdicts
    images: tuple[ImageVerdicts, ...] = ()
