"""``make opt``: torcx-tectonic under ``/opt`` for nodes without system
extensions (Container Linux), installed by a spec 2.x Ignition config alone.

Container Linux's systemd (241 at its end) cannot merge an extension image, its
``/usr`` is read-only, and its Ignition (0.34) reads spec 2.x only. So the
same program as the image's (:mod:`sysext.build`) is laid out for the prefix
``/opt/torcx-tectonic``: its interpreter, C library and every library, the
step scripts in ``libexec/`` and the operator command in ``bin/``; the units
go to ``/etc/systemd/system/`` and the generator to
``/etc/systemd/system-generators/``. The build writes

- ``torcx-tectonic-VERSION-ARCH-opt/``: the files of ``/opt/torcx-tectonic``,
  to be served from one URL (BASE_URL/PATH);
- ``torcx-tectonic-VERSION-ARCH-opt.ign``: the Ignition config (spec
  2.2.0). Each file under ``/opt`` is fetched from BASE_URL and pinned by
  its sha512 (``verification.hash``) into a directory of its own release,
  ``/opt/torcx-tectonic-VERSION-DIGEST``, and ``/opt/torcx-tectonic`` links
  to it, so a newer build is put in place by moving one link; the units, the
  generator and the configuration are embedded; the operator's parts (the
  cluster drop-in and the bucket's key, placeholders to replace) are the
  Flatcar example's; it enables ``torcx-bootstrap.target``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import sys
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import (
    GENERATOR,
    IGNITION_EXAMPLE,
    NAME,
    REPO,
    BuildError,
    Layout,
    analyse,
    build_program,
    normalise_modes,
    systemd_arch,
)

PREFIX = "/opt/torcx-tectonic"
OPT = Layout(PREFIX, {"LIBEXEC_DIR": f"{PREFIX}/libexec", "SYSTEMD_UNIT_DIR": "/etc/systemd/system",
                      "SYSCONF_DIR": "/etc", "DOC_DIR": f"{PREFIX}/share/doc", "BIN_DIR": f"{PREFIX}/bin"},
             "/etc/systemd/system-generators", f"{PREFIX.lstrip('/')}/share/licenses",
             f"{PREFIX.lstrip('/')}/share/build-info.json")
#: The Ignition spec version written: a 2.x that Container Linux's last Ignition (0.34) reads.
SPEC_VERSION = "2.2.0"
#: Where the example config fetches the program from; `--base-url` puts in yours.
BASE_URL = "https://torcx.example.com/opt/torcx-tectonic"
#: What the config enables (Ignition 2.x writes a preset; the target's [Install] does the rest).
ENABLED = ("torcx-bootstrap.target",)
DEFAULT_CONFIG = "etc/torcx-tectonic/torcx-tectonic.conf"
#: Files of the Flatcar example that are the operator's (the cluster's settings, its key).
OPERATOR_FILES = "/etc/torcx-tectonic/"


@dataclass(frozen=True)
class OptInstall:
    """What a build produced."""

    tree: Path
    served: Path
    ignition: Path
    version: str
    arch: str
    #: where the files go on a node; the prefix links to it
    release: str


def data_url(data: bytes) -> str:
    """An RFC 2397 URL holding ``data`` (percent-encoded, as Butane writes them)."""
    return "data:," + urllib.parse.quote(data, safe="")


def file_entry(path: str, mode: int, source: str, sha512: str | None = None) -> dict[str, Any]:
    """A spec 2.x ``storage.files`` entry (on the root file system)."""
    contents: dict[str, Any] = {"source": source}
    if sha512:
        contents["verification"] = {"hash": f"sha512-{sha512}"}
    return {"filesystem": "root", "path": path, "mode": mode, "contents": contents}


#: The Flatcar example names Flatcar's update operator; these nodes keep the
#: default, Container Linux's (a Flatcar node before 3185 sets Flatcar's back).
FLATCAR_ANNOTATION = "annotation = flatcar-linux-update.v1.flatcar-linux.net/tectonic-torcx-pre-hook-ok\n"
CONTAINER_LINUX_ANNOTATION = ("; annotation: the default names Container Linux's update operator; on Flatcar:\n"
                              "; " + FLATCAR_ANNOTATION)


def _embedded(url: str, path: str) -> bytes:
    """The bytes of a data URL the example embeds (percent-encoded, or base64)."""
    if url.startswith("data:;base64,"):
        return base64.b64decode(url.removeprefix("data:;base64,"), validate=True)
    if url.startswith("data:,"):
        return urllib.parse.unquote_to_bytes(url.removeprefix("data:,"))
    raise BuildError(f"{IGNITION_EXAMPLE}: {path} is not embedded as a data URL")


def operator_files(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Flatcar example's configuration and keyring files, as spec 2.x
    entries, for Container Linux's update operator."""
    found = [file_entry(f["path"], int(f.get("mode", 0o644)), data_url(
                 _embedded(f["contents"]["source"], f["path"]).replace(FLATCAR_ANNOTATION.encode(),
                                                                        CONTAINER_LINUX_ANNOTATION.encode())))
             for f in example["storage"]["files"] if f["path"].startswith(OPERATOR_FILES)]
    if not found:
        raise BuildError(f"{IGNITION_EXAMPLE} has no file under {OPERATOR_FILES}")
    return found


def release_of(tree: Path, prefix: str, version: str) -> str:
    """The directory one build's files go to: the prefix, the version and a
    digest of what is under the prefix (two builds of one commit share it)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in (tree / prefix.lstrip("/")).rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(tree)}\0{hashlib.sha512(path.read_bytes()).hexdigest()}\n".encode())
    return f"{prefix}-{version}-{digest.hexdigest()[:12]}"


def render_ignition(tree: Path, prefix: str, release: str, base_url: str, example: Mapping[str, Any]) -> dict[
        str, Any]:
    """The spec 2.x config writing ``tree`` to a node: what is under ``prefix``
    fetched from ``base_url`` into ``release``, pinned by its sha512, with
    ``prefix`` a link to it; the rest embedded."""
    files = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        on_node = f"/{path.relative_to(tree)}"
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        data = path.read_bytes()
        if on_node.startswith(f"{prefix}/"):
            inside = on_node[len(prefix) + 1:]
            url = f"{base_url.rstrip('/')}/{urllib.parse.quote(inside)}"
            files.append(file_entry(f"{release}/{inside}", mode, url, hashlib.sha512(data).hexdigest()))
        else:
            files.append(file_entry(on_node, mode, data_url(data)))
    link = {"filesystem": "root", "path": prefix, "target": os.path.basename(release), "hard": False}
    return {"ignition": {"version": SPEC_VERSION},
            "storage": {"files": [*files, *operator_files(example)], "links": [link]},
            "systemd": {"units": [{"name": name, "enabled": True} for name in ENABLED]}}


def build_opt(output: Path, work: Path | None = None, base_url: str = BASE_URL) -> OptInstall:
    """The /opt install and its Ignition config, in ``output``."""
    from torcx_tectonic import __version__
    from torcx_tectonic.config import render_default

    arch = systemd_arch()
    work = work or output / "opt"
    tree = work / "tree"
    build_program(tree, OPT, analyse(work), arch)
    (tree / DEFAULT_CONFIG).parent.mkdir(parents=True)
    (tree / DEFAULT_CONFIG).write_text(render_default())
    normalise_modes(tree)
    if not (tree / OPT.generator_dir.lstrip("/") / GENERATOR).is_file():
        raise BuildError(f"the generator is not in {OPT.generator_dir}")
    release = release_of(tree, PREFIX, __version__)
    document = render_ignition(tree, PREFIX, release, base_url, json.loads((REPO / IGNITION_EXAMPLE).read_text()))
    name = f"{NAME}-{__version__}-{arch}-opt"
    served = output / name
    if served.exists():
        shutil.rmtree(served)
    shutil.copytree(tree / PREFIX.lstrip("/"), served, symlinks=True)
    ignition = output / f"{name}.ign"
    ignition.write_text(json.dumps(document, indent=1) + "\n")
    return OptInstall(tree=tree, served=served, ignition=ignition, version=__version__, arch=arch, release=release)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sysext.opt", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "build", help="where it goes (default build/)")
    parser.add_argument("--base-url", default=BASE_URL, help=f"where nodes fetch {PREFIX}'s files from")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        built = build_opt(args.output.resolve(), base_url=args.base_url)
    except BuildError as err:
        print(f"make opt: {err}", file=sys.stderr)
        return 1
    print(f"{built.served}: serve these files at {args.base_url}/")
    print(f"{built.ignition}: the Ignition (spec {SPEC_VERSION}) config that installs them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
