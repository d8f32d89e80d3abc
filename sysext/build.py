"""``make sysext``: the system extension image ``torcx-tectonic-VERSION-ARCH.raw``.

Flatcar has no Python and no package manager; what it runs from outside its
own image arrives as a system extension (systemd-sysext(8)): a file system
image whose ``/usr`` is overlaid on the node's. This build

1. freezes :mod:`sysext.launcher` with PyInstaller (one directory: the
   interpreter, the ``torcx_tectonic`` package, its libraries and every
   shared library they load but the C library), so nothing of Python is
   needed on the node;
2. lays out the image's ``/usr``: the frozen program in
   ``/usr/lib/torcx-tectonic/``, the generator, step scripts and operator
   command as symlinks to it where ``make install`` puts them, the shipped
   units with their placeholders filled in, the activation drop-in, the
   documentation and the commented default configuration, and the
   ``extension-release`` file that lets ``systemd-sysext`` merge it;
3. checks what the frozen program needs from the node (libraries outside the
   bundle, the newest glibc symbol version) and refuses anything but libc;
4. packs the tree with ``mksquashfs`` and writes its sha512 (Ignition's
   ``verification.hash``) beside it.

The scripts are bundled as they are, whatever ``generator/``, ``libexec/``
and ``bin/`` hold at build time; their imports are frozen in.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .launcher import COMMANDS_DIR, MULTICALL_NAME

REPO = Path(__file__).resolve().parents[1]
NAME = "torcx-tectonic"
#: Where the frozen program lives in the image.
APP_DIR = "usr/lib/torcx-tectonic"
#: systemd's names for the machine architectures (ARCHITECTURE= in extension-release).
SYSTEMD_ARCH = {"x86_64": "x86-64", "aarch64": "arm64"}
#: The image's directories; the package's installdirs must name the same.
LAYOUT = {
    "LIBEXEC_DIR": "/usr/libexec/torcx-tectonic",
    "SYSTEMD_UNIT_DIR": "/usr/lib/systemd/system",
    "SYSCONF_DIR": "/etc",
    "DOC_DIR": "/usr/share/doc/torcx-tectonic",
    "BIN_DIR": "/usr/bin",
}
GENERATOR_DIR = "/usr/lib/systemd/system-generators"
IGNITION_EXAMPLE = "examples/flatcar-sysext.ign"
EXAMPLE_CONFIG = "usr/share/torcx-tectonic/torcx-tectonic.conf.example"
#: Ships in the image: units from an extension cannot be enabled by links in /etc
#: before the image is merged, so the image enables the bootstrap itself.
ACTIVATION_DROPIN = "usr/lib/systemd/system/multi-user.target.d/10-torcx-tectonic.conf"
ACTIVATION = """\
# torcx-tectonic, installed as a system extension: merging the image enables it.
# Same effect as `systemctl enable torcx-bootstrap.target` on a packaged install
# (its steps only run while /etc/kubernetes/kubelet.env is missing). Wants=, not
# Upholds=: a failed bootstrap must not be started again and again.
[Unit]
Wants=torcx-bootstrap.target
"""
#: Libraries the frozen program may take from the node: the C library's own
#: (every Linux node has them, and they must match its kernel interface), and
#: zlib, which PyInstaller's bootloader links before it can load its bundle.
NODE_LIBRARIES = re.compile(
    r"^(linux-vdso\.so\.1|linux-gate\.so\.1|ld-linux[-\w.]*\.so\.\d+|libc\.so\.6|libm\.so\.6|libdl\.so\.2"
    r"|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1|libz\.so\.1)$"
)
#: Modules the analysis would pull in that no command runs: requests' fallback
#: to pyOpenSSL (only without the ssl module), and lxml beyond the etree that
#: pystemd parses D-Bus introspection with (lxml.html drags in BeautifulSoup).
EXCLUDED_MODULES = ("tkinter", "unittest", "pydoc", "doctest", "lib2to3", "distutils", "setuptools", "pip",
                    "pkg_resources", "test", "sqlite3", "xmlrpc", "curses", "readline",
                    "urllib3.contrib.pyopenssl", "OpenSSL", "cryptography",
                    "lxml.html", "lxml.isoschematron", "lxml.cssselect", "lxml.objectify", "lxml.doctestcompare",
                    "lxml.usedoctest", "bs4", "html5lib", "soupsieve", "urllib3.contrib.securetransport", "ctypes")
#: PyInstaller runtime hooks no command needs, dropped for start-up time:
#: pyi_rth_inspect reads the names in base_library.zip at every start (some 14 ms)
#: so that inspect.getsourcefile() works on frozen modules; nothing calls it.
UNNEEDED_RUNTIME_HOOKS = ("pyi_rth_inspect",)
#: Packages whose modules are imported by name at run time somewhere: all of them go in.
COLLECT_ALL_SUBMODULES = ("torcx_tectonic", "pystemd", "yaml", "iniparse", "packaging")


class BuildError(RuntimeError):
    """The image cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class Image:
    """What a build produced."""

    raw: Path
    ignition: Path
    tree: Path
    version: str
    arch: str
    sha512: str
    glibc: str


def systemd_arch(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    try:
        return SYSTEMD_ARCH[machine]
    except KeyError:
        raise BuildError(f"machine {machine!r} has no known systemd architecture name "
                         f"(known: {', '.join(SYSTEMD_ARCH)})") from None


def image_name(version: str, arch: str) -> str:
    return f"{NAME}-{version}-{arch}.raw"


def extension_release(arch: str) -> str:
    """``usr/lib/extension-release.d/extension-release.torcx-tectonic``.

    ``SYSEXT_LEVEL`` rather than ``VERSION_ID``: the image brings its own
    libraries, so it keeps being merged after every OS update.
    """
    return f"ID=flatcar\nSYSEXT_LEVEL=1.0\nARCHITECTURE={arch}\n"


def commands(repo: Path = REPO) -> dict[str, Path]:
    """Every entry point of the bundle by command name: the generator, the
    libexec scripts and the operator command."""
    found: dict[str, Path] = {}
    sources = [repo / "generator/torcx-tectonic-generator",
               *sorted((repo / "libexec").iterdir()), *sorted((repo / "bin").iterdir())]
    for path in sources:
        if not path.is_file():
            raise BuildError(f"{path}: not a file (every entry point is a script)")
        if path.name == MULTICALL_NAME or path.name in found:
            raise BuildError(f"{path}: command name {path.name!r} is taken by "
                             f"{found.get(path.name, 'the launcher itself')}")
        found[path.name] = path
    return found


def script_imports(source: str, origin: str) -> set[str]:
    """Modules a script imports (by static analysis: the frozen program must hold them)."""
    try:
        tree = ast.parse(source, origin)
    except SyntaxError as err:
        raise BuildError(f"{origin}: not Python: {err}") from None
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def check_layout(installdirs: Mapping[str, str]) -> None:
    """The frozen package names its directories from ``installdirs``: they must be the image's."""
    wrong = {key: value for key, value in LAYOUT.items() if installdirs.get(key) != value}
    if wrong:
        raise BuildError("torcx_tectonic/installdirs.py does not name the image's directories: "
                         + ", ".join(f"{k} = {installdirs.get(k)!r}, the image has {v!r}" for k, v in wrong.items()))


def substitute_unit(text: str, origin: str) -> str:
    """Fill in the placeholders ``make install`` fills in; any other one is an error."""
    text = text.replace("@LIBEXECDIR@", LAYOUT["LIBEXEC_DIR"]).replace("@DOCDIR@", LAYOUT["DOC_DIR"])
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise BuildError(f"{origin}: placeholder(s) {', '.join(left)} have no value in the image")
    return text


def run(cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a build tool; its failure names the command and what it printed."""
    try:
        return subprocess.run(list(cmd), check=True, text=True, capture_output=True)
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]} is not installed (`make sysext` installs it)") from None
    except subprocess.CalledProcessError as err:
        raise BuildError(f"{' '.join(cmd)} exited with {err.returncode}:\n{err.stdout}{err.stderr}") from None


def hidden_imports(scripts: Iterable[Path]) -> list[str]:
    """What the analysis of the launcher alone cannot see: the scripts' imports,
    and every module of the packages that import by name."""
    from PyInstaller.utils.hooks import collect_submodules

    modules: set[str] = set()
    for script in scripts:
        modules |= script_imports(script.read_text(), str(script))
    for package in COLLECT_ALL_SUBMODULES:
        found = collect_submodules(package)
        if not found:
            raise BuildError(f"package {package} is not importable by {sys.executable}")
        modules.update(found)
    return sorted(modules)


def freeze(work: Path) -> Path:
    """PyInstaller, one directory, as ``torcx-tectonic-multicall.spec`` says:
    returns the directory holding the launcher."""
    import PyInstaller.__main__

    dist = work / "dist"
    spec = REPO / "sysext/torcx-tectonic-multicall.spec"
    print(f"+ pyinstaller {spec}", file=sys.stderr)
    PyInstaller.__main__.run(["--noconfirm", "--clean", "--log-level", "WARN", "--distpath", str(dist),
                              "--workpath", str(work / "pyinstaller"), str(spec)])
    return dist / MULTICALL_NAME


def elf_files(directory: Path) -> list[Path]:
    out = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(path)
    return out


def node_libraries(app: Path) -> dict[str, set[str]]:
    """Shared libraries the frozen program's ELF files take from outside the
    bundle, with the files that need them (``ldd``): the bootloader as it is
    first executed, everything else with the bundle first in the library path,
    as the bootloader arranges it before it executes itself again."""
    internal = app / "_internal"
    needs: dict[str, set[str]] = {}
    for elf in elf_files(app):
        path = {"LD_LIBRARY_PATH": str(internal)} if elf.parent != app else {}
        result = subprocess.run(["ldd", str(elf)], capture_output=True, text=True,
                                env={**path, "PATH": os.environ.get("PATH", "")})
        if result.returncode != 0 and "not a dynamic executable" in result.stdout + result.stderr:
            continue  # statically linked
        for line in result.stdout.splitlines():
            parts = line.split()
            if not parts or parts[0] == "statically":
                continue
            name = os.path.basename(parts[0])
            target = parts[2] if len(parts) > 2 and parts[1] == "=>" else parts[0]
            if target == "not":
                raise BuildError(f"{elf.relative_to(app)} needs {name}, which is found nowhere")
            if not target.startswith(str(internal) + "/"):
                needs.setdefault(name, set()).add(str(elf.relative_to(app)))
    return needs


def glibc_requirement(app: Path) -> str:
    """The newest ``GLIBC_x.y`` symbol version any ELF file of the program needs."""
    newest = (0, 0)
    for elf in elf_files(app):
        dump = run(["objdump", "-T", str(elf)]).stdout
        for major, minor in re.findall(r"\bGLIBC_(\d+)\.(\d+)\b", dump):
            newest = max(newest, (int(major), int(minor)))
    return f"{newest[0]}.{newest[1]}"


def assemble(tree: Path, app: Path, scripts: Mapping[str, Path], arch: str) -> None:
    """Lay out the image's ``/usr`` from the frozen program and the repository."""
    from torcx_tectonic.config import render_default

    if tree.exists():
        shutil.rmtree(tree)
    app_dir = tree / APP_DIR
    shutil.copytree(app, app_dir, symlinks=True)
    commands_dir = app_dir / COMMANDS_DIR
    commands_dir.mkdir()
    launcher = f"/{APP_DIR}/{MULTICALL_NAME}"
    for name, source in scripts.items():
        shutil.copyfile(source, commands_dir / name)
        (commands_dir / name).chmod(0o644)
    entry_points = {f"{GENERATOR_DIR}/torcx-tectonic-generator": "torcx-tectonic-generator",
                    **{f"{LAYOUT['BIN_DIR']}/{p.name}": p.name for p in scripts.values() if p.parent.name == "bin"},
                    **{f"{LAYOUT['LIBEXEC_DIR']}/{p.name}": p.name for p in scripts.values()
                       if p.parent.name == "libexec"}}
    for path in entry_points:
        link = tree / path.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(launcher, os.path.dirname(path)))
    unit_dir = tree / LAYOUT["SYSTEMD_UNIT_DIR"].lstrip("/")
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in sorted((REPO / "units").iterdir()):
        (unit_dir / unit.name).write_text(substitute_unit(unit.read_text(), str(unit)))
    (tree / ACTIVATION_DROPIN).parent.mkdir(parents=True)
    (tree / ACTIVATION_DROPIN).write_text(ACTIVATION)
    doc_dir = tree / LAYOUT["DOC_DIR"].lstrip("/")
    doc_dir.mkdir(parents=True)
    shutil.copyfile(REPO / "README.md", doc_dir / "README.md")
    shutil.copytree(REPO / "docs", doc_dir / "docs")  # the pages the README links
    (tree / EXAMPLE_CONFIG).parent.mkdir(parents=True)
    (tree / EXAMPLE_CONFIG).write_text(render_default())
    release = tree / f"usr/lib/extension-release.d/extension-release.{NAME}"
    release.parent.mkdir(parents=True)
    release.write_text(extension_release(arch))
    for entry in tree.rglob("*"):
        if not entry.is_symlink():
            entry.chmod(0o755 if entry.is_dir() or os.access(entry, os.X_OK) else 0o644)


LICENSE_DIR = "usr/share/licenses/torcx-tectonic"


def bundled_packages(app: Path) -> list[str]:
    """The Debian packages the frozen program takes files from: its shared
    libraries, and the interpreter and Python packages it was frozen from."""
    sources = [lib.name for lib in elf_files(app / "_internal")]
    import iniparse
    import packaging
    import pystemd
    import requests
    import urllib3
    import yaml

    sources += [str(Path(m.__file__ or "").parent) for m in (iniparse, packaging, pystemd, requests,
                                                              urllib3, yaml)]
    sources.append(str(Path(os.__file__).parent))  # the standard library
    found = subprocess.run(["dpkg", "-S", *sources], capture_output=True, text=True, check=False).stdout
    return sorted({pkg.split(":")[0].strip() for line in found.splitlines() for pkg in line.split(": ")[0].split(",")})


def collect_licenses(tree: Path, app: Path) -> list[str]:
    """The copyright files of what the image bundles (the frozen program
    carries binaries of other projects), and PyInstaller's bootloader's."""
    from importlib import metadata

    target = tree / LICENSE_DIR
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for package in bundled_packages(app):
        copyright_file = Path("/usr/share/doc") / package / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, target / f"{package}.copyright")
            names.append(package)
    for file in metadata.files("pyinstaller") or []:
        if file.name in ("COPYING.txt", "LICENSE.txt"):
            shutil.copyfile(Path(str(file.locate())), target / f"pyinstaller-{file.name}")
            names.append("pyinstaller")
    if not names:
        raise BuildError("no licence of a bundled component was found; the image must carry them")
    return names


def squash(tree: Path, raw: Path) -> None:
    """The image file: squashfs, owned by root, without the build host's xattrs."""
    tmp = raw.with_name(raw.name + ".tmp")
    tmp.unlink(missing_ok=True)
    run(["mksquashfs", str(tree), str(tmp), "-noappend", "-all-root", "-no-xattrs", "-quiet", "-no-progress"])
    tmp.rename(raw)


def sha512(path: Path) -> str:
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def render_ignition(example: Mapping[str, Any], name: str, digest: str) -> dict[str, Any]:
    """The example Ignition config for this image: its file name and hash filled in."""
    document: dict[str, Any] = json.loads(json.dumps(example))
    images = [f for f in document["storage"]["files"] if f["path"].endswith(".raw")]
    if len(images) != 1:
        raise BuildError(f"the Ignition example should install one .raw image, it has {len(images)}")
    image = images[0]
    old = image["path"]
    image["path"] = f"{os.path.dirname(old)}/{name}"
    contents = image["contents"]
    contents["source"] = f"{contents['source'].rsplit('/', 1)[0]}/{name}"
    contents["verification"] = {"hash": f"sha512-{digest}"}
    for link in document["storage"].get("links", []):
        if link["target"] == old:
            link["target"] = image["path"]
    return document


def build(output: Path, work: Path | None = None) -> Image:
    """The whole build; returns what it made (the image is ``output/NAME-VERSION-ARCH.raw``)."""
    from torcx_tectonic import __version__, installdirs

    check_layout({key: getattr(installdirs, key) for key in LAYOUT})
    arch = systemd_arch()
    work = work or output / "sysext"
    scripts = commands()
    app = freeze(work)
    outside = {lib: files for lib, files in node_libraries(app).items() if not NODE_LIBRARIES.match(lib)}
    if outside:
        needs = (f"{lib} (for {', '.join(sorted(files))})" for lib, files in sorted(outside.items()))
        raise BuildError(f"the frozen program would need libraries of the node beyond libc: {'; '.join(needs)}")
    glibc = glibc_requirement(app)
    tree = work / "tree"
    assemble(tree, app, scripts, arch)
    licensed = collect_licenses(tree, app)
    info = {"version": __version__, "architecture": arch, "python": platform.python_version(),
            "glibc_minimum": glibc, "commands": sorted(scripts), "licences": licensed}
    (tree / "usr/share/torcx-tectonic/build-info.json").write_text(json.dumps(info, indent=1) + "\n")
    raw = output / image_name(__version__, arch)
    squash(tree, raw)
    digest = sha512(raw)
    Path(f"{raw}.sha512").write_text(f"{digest}  {raw.name}\n")
    example = json.loads((REPO / IGNITION_EXAMPLE).read_text())
    ignition = raw.with_suffix(".ign")
    ignition.write_text(json.dumps(render_ignition(example, raw.name, digest), indent=2) + "\n")
    return Image(raw=raw, ignition=ignition, tree=tree, version=__version__, arch=arch, sha512=digest, glibc=glibc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sysext.build", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "build", help="where the image goes (default build/)")
    parser.add_argument("--work", type=Path, help="scratch directory (default OUTPUT/sysext)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    try:
        image = build(args.output.resolve(), args.work.resolve() if args.work else None)
    except BuildError as err:
        print(f"make sysext: {err}", file=sys.stderr)
        return 1
    size = image.raw.stat().st_size
    print(f"{image.raw} ({size / 2**20:.1f} MiB, needs glibc >= {image.glibc})")
    print(f"verification.hash: sha512-{image.sha512}")
    print(f"{image.ignition}: the Ignition example for this image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
