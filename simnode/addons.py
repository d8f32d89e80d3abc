"""Real torcx-format addon archives for the integration tests.

The product hashes, stores and profiles addons but never unpacks them; torcx
does at boot.  So the tests need archives that are exactly what torcx reads:
a gzip tarball named ``<name>:<reference>.torcx.tgz`` with the image manifest
at ``.torcx/manifest.json`` (``kind: image-manifest-v0``) and the files it
lists.  The manifest's key for binaries is ``bin`` (torcx's
``internal/torcx/types.go``: ``Binaries []string `json:"bin"```), not
``bins``.

Archives are deterministic (fixed mtimes, owners and gzip header), so the
same name and reference always give the same bytes and the same sha512: a
test can build the "same" addon twice, e.g. once for the bucket and once for a
node's vendor store, and the hashes agree.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

#: 2017-07-14, around when torcx addons first shipped; any constant works.
FIXED_MTIME = 1500000000


def addon_filename(name: str, reference: str) -> str:
    """The store file name torcx looks for: ``<name>:<reference>.torcx.tgz``."""
    return f"{name}:{reference}.torcx.tgz"


def image_manifest(name: str) -> dict[str, object]:
    """The ``.torcx/manifest.json`` content of the test addon called ``name``."""
    return {
        "kind": "image-manifest-v0",
        "value": {
            "bin": [f"/bin/{name}"],
            "units": [f"/lib/systemd/system/{name}.service"],
            "network": [],
            "sysusers": [],
        },
    }


def addon_files(name: str, reference: str) -> dict[str, tuple[bytes, int]]:
    """Archive members (path → content, mode) of the test addon.

    The binary prints the reference, so a test that runs it after torcx
    applied a profile can tell which version is live.
    """
    script = (
        "#!/bin/sh\n"
        f"# torcx-tectonic test addon {name}:{reference}\n"
        f'echo "{name.capitalize()} version {reference}, build torcx-test"\n'
    )
    # Started, it notes what it found in its data directory and which version it is, as the
    # tests' stand-ins for the OS's own Docker do: a test can tell that the addon torcx applied
    # started, and on what data.
    unit = (
        "[Unit]\n"
        f"Description=Test addon {name}:{reference} (torcx-tectonic integration tests)\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart=/bin/sh -c 'test -d /var/lib/{name} && ls -A /var/lib/{name} > /run/{name}-saw; "
        f"/run/torcx/bin/{name} > /run/{name}-version'\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    manifest = json.dumps(image_manifest(name), indent=2, sort_keys=True) + "\n"
    return {
        ".torcx/manifest.json": (manifest.encode(), 0o644),
        f"bin/{name}": (script.encode(), 0o755),
        f"lib/systemd/system/{name}.service": (unit.encode(), 0o644),
    }


def build_addon(
    name: str, reference: str, extra_files: Mapping[str, bytes] | None = None
) -> bytes:
    """The archive bytes: parent directories first, members in sorted order."""
    files = addon_files(name, reference)
    for path, content in (extra_files or {}).items():
        files[path.lstrip("/")] = (content, 0o644)
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))

    raw = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of varying fields.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        for d in sorted(dirs):
            info = _tarinfo(d, 0o755)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for path in sorted(files):
            content, mode = files[path]
            info = _tarinfo(path, mode)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def make_addon(
    path: Path,
    name: str,
    reference: str,
    extra_files: Mapping[str, bytes] | None = None,
) -> str:
    """Write the addon and return its sha512 as lowercase hex.

    ``path`` is either the archive's file path, or an existing directory (a
    store) in which the archive gets its canonical name
    ``<name>:<reference>.torcx.tgz``.  Parent directories are created.
    """
    path = Path(path)
    if path.is_dir():
        path = path / addon_filename(name, reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = build_addon(name, reference, extra_files)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha512(data).hexdigest()


def sha512_file(path: Path) -> str:
    """sha512 hex of a file, the form the package manifest's ``hash`` carries after ``sha512-``."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def read_image_manifest(path: Path) -> dict[str, object]:
    """The ``.torcx/manifest.json`` of an addon archive (for assertions)."""
    with tarfile.open(path, "r:gz") as tar:
        member = tar.extractfile(".torcx/manifest.json")
        if member is None:
            raise ValueError(f"{path}: .torcx/manifest.json is not a regular file")
        data = json.loads(member.read())
    if not isinstance(data, dict):
        raise TypeError(f"{path}: .torcx/manifest.json is not a JSON object")
    return data


def _tarinfo(path: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.mode = mode
    info.mtime = FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def make_sysext_image(directory: Path, runtime: str, version: str, release: str, arch: str = "x86-64",
                      binary: str | None = None) -> Path:
    """A real system extension image as the sysext-bakery names and builds
    them (squashfs, everything under /usr): ``/usr/bin/<binary>`` (default:
    the image's name; ``kubelet`` in the ``kubernetes`` image) prints its
    name and version, ``extension-release.<runtime>`` is ``release``."""
    tree = directory / f".tree-{runtime}-{version}-{arch}"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "usr/lib/extension-release.d").mkdir(parents=True)
    (tree / f"usr/lib/extension-release.d/extension-release.{runtime}").write_text(release)
    (tree / "usr/bin").mkdir(parents=True)
    program = tree / f"usr/bin/{binary or runtime}"
    program.write_text(f"#!/bin/sh\necho {binary or runtime} {version}\n")
    program.chmod(0o755)
    raw = directory / f"{runtime}-{version}-{arch}.raw"
    subprocess.run(["mksquashfs", str(tree), str(raw), "-all-root", "-noappend", "-quiet"], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return raw
