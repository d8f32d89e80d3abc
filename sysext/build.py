"""``make sysext``: the system extension image ``torcx-tectonic-VERSION-ARCH.raw``.

Flatcar has no Python and no package manager; what it runs from outside its
own image arrives as a system extension (systemd-sysext(8)): a file system
image whose ``/usr`` is overlaid on the node's. This build

1. asks PyInstaller's analysis (its hooks know the imports made from C code)
   which modules, extension modules and data files the entry points need;
2. lays out the program under a prefix (``/usr/lib/torcx-tectonic`` in the
   image): the build host's own ``python3`` in ``bin/``, those modules
   byte-compiled into ``lib/pythonX.Y/``, and in ``lib/`` every shared
   library the interpreter and the extension modules load, the dynamic
   loader and the C library included. The interpreter's ELF interpreter is
   ``PREFIX/lib/ld-linux-*.so`` and its library path ``$ORIGIN/../lib``
   (patchelf); a ``python3._pth`` beside it fixes ``sys.path``. So the
   program needs the node's kernel and nothing else, and unpacks nothing at
   run time;
3. checks that every ELF file of the program finds all its libraries in the
   program (with the program's own loader);
4. lays out the image's ``/usr`` around it: the generator, step scripts and
   operator command where ``make install`` puts them, each the repository's
   script with ``#!PREFIX/bin/python3 -IS`` as its first line; the units
   with their placeholders filled in, the activation drop-in, the
   documentation, the commented default configuration, the licences of what
   is bundled, and the ``extension-release`` file that lets
   ``systemd-sysext`` merge it;
5. packs the tree with ``mksquashfs`` (reproducibly: every time is the
   commit's, owners root, no xattrs) and writes its sha512 (Ignition's
   ``verification.hash``) beside it.

Two builds of one commit give the same bytes: the times come from
``SOURCE_DATE_EPOCH`` (the commit's time unless set), the byte code is
compiled with a fixed hash seed and ``unchecked-hash`` (no source time in
it) under the path it has on the node, and nothing names the build host's
directories.
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
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NAME = "torcx-tectonic"
GENERATOR = "torcx-tectonic-generator"
#: Where the program lives in the image (its prefix: the interpreter path is absolute).
PROGRAM_PREFIX = "/usr/lib/torcx-tectonic"
#: systemd's names for the machine architectures (ARCHITECTURE= in extension-release).
SYSTEMD_ARCH = {"x86_64": "x86-64", "aarch64": "arm64"}
#: The image's directories (written into the bundled package's installdirs).
LAYOUT = {
    "LIBEXEC_DIR": "/usr/libexec/torcx-tectonic",
    "SYSTEMD_UNIT_DIR": "/usr/lib/systemd/system",
    "SYSCONF_DIR": "/etc",
    "DOC_DIR": "/usr/share/doc/torcx-tectonic",
    "BIN_DIR": "/usr/bin",
}
GENERATOR_DIR = "/usr/lib/systemd/system-generators"


@dataclass(frozen=True)
class Layout:
    """Where one kind of install puts things: the program's prefix (the
    interpreter path in it is absolute), the directories the package names
    (``installdirs``), the generator's directory, and where the licences and
    the build's own account of itself go (relative to the root)."""

    prefix: str
    dirs: Mapping[str, str]
    generator_dir: str
    licences: str
    build_info: str


#: The system extension image: everything under /usr, merged by systemd-sysext.
SYSEXT = Layout(PROGRAM_PREFIX, LAYOUT, GENERATOR_DIR, "usr/share/licenses/torcx-tectonic",
                "usr/share/torcx-tectonic/build-info.json")
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
#: Modules the analysis would pull in that no command runs: requests' fallback
#: to pyOpenSSL (only without the ssl module), and lxml beyond the etree that
#: pystemd parses D-Bus introspection with (lxml.html drags in BeautifulSoup).
EXCLUDED_MODULES = ("tkinter", "unittest", "pydoc", "doctest", "lib2to3", "distutils", "setuptools", "pip",
                    "pkg_resources", "test", "sqlite3", "xmlrpc", "curses", "readline",
                    "urllib3.contrib.pyopenssl", "OpenSSL", "cryptography",
                    "lxml.html", "lxml.isoschematron", "lxml.cssselect", "lxml.objectify", "lxml.doctestcompare",
                    "lxml.usedoctest", "bs4", "html5lib", "soupsieve", "urllib3.contrib.securetransport", "ctypes")
#: Packages whose modules are imported by name at run time somewhere: all of them go in.
COLLECT_ALL_SUBMODULES = ("torcx_tectonic", "pystemd", "yaml", "iniparse", "packaging")
#: What sysext/analysis.spec writes into PyInstaller's dist directory.
ANALYSIS_FILE = "analysis.json"
#: The program's module directory, below PREFIX/lib (``sys.path`` holds it alone).
PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"
#: The interpreter's options in every entry point: isolated from the caller's
#: environment, no ``site`` (its ``sys.path`` is the ``._pth`` file's).
INTERPRETER_OPTIONS = "-IS"


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
    kernel: str


@dataclass(frozen=True)
class Needs:
    """What the analysis says the entry points need, by where each goes in the
    program's module directory (``a/b.py``, ``yaml/_yaml.cpython-...so``)."""

    modules: dict[str, Path]
    extensions: dict[str, Path]
    data: dict[str, Path]


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
    sources = [repo / "generator" / GENERATOR, *sorted((repo / "libexec").iterdir()), *sorted((repo / "bin").iterdir())]
    for path in sources:
        if not path.is_file():
            raise BuildError(f"{path}: not a file (every entry point is a script)")
        if path.name in found:
            raise BuildError(f"{path}: command name {path.name!r} is taken by {found[path.name]}")
        found[path.name] = path
    return found


def script_imports(source: str, origin: str) -> set[str]:
    """Modules a script imports (by static analysis: the program must hold them)."""
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


def substitute_unit(text: str, origin: str, dirs: Mapping[str, str] = LAYOUT) -> str:
    """Fill in the placeholders ``make install`` fills in; any other one is an error."""
    text = text.replace("@LIBEXECDIR@", dirs["LIBEXEC_DIR"]).replace("@DOCDIR@", dirs["DOC_DIR"])
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise BuildError(f"{origin}: placeholder(s) {', '.join(left)} have no value in the image")
    return text


def entry_script(source: str, prefix: str) -> str:
    """A repository script as the program runs it: its first line names the
    program's interpreter (``make install`` does the same with the system's)."""
    first, _, body = source.partition("\n")
    if not first.startswith("#!"):
        raise BuildError(f"a script without a #! line: {first[:60]!r}")
    return f"#!{prefix}/bin/python3 {INTERPRETER_OPTIONS}\n{body}"


def run(cmd: Sequence[str], env: Mapping[str, str] | None = None, *,
        quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a build tool (said on stderr unless ``quiet``: the inspections of each
    file); its failure names the command and what it printed."""
    if not quiet:
        print(f"+ {' '.join(cmd)}", file=sys.stderr)
    try:
        return subprocess.run(list(cmd), check=True, text=True, capture_output=True,
                              env=None if env is None else dict(env))
    except FileNotFoundError:
        raise BuildError(f"{cmd[0]} is not installed (`make sysext` installs it)") from None
    except subprocess.CalledProcessError as err:
        raise BuildError(f"{' '.join(cmd)} exited with {err.returncode}:\n{err.stdout}{err.stderr}") from None


def source_date_epoch(repo: Path = REPO) -> int:
    """Every time in the image: ``$SOURCE_DATE_EPOCH``, else the commit's time."""
    given = os.environ.get("SOURCE_DATE_EPOCH")
    if given:
        return int(given)
    return int(run(["git", "-C", str(repo), "log", "-1", "--format=%ct"]).stdout.strip())


def hidden_imports(scripts: Iterable[Path]) -> list[str]:
    """What the analysis of one script cannot see: the other scripts' imports,
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


def module_file(name: str, source: str) -> str:
    """Where module ``name`` goes below the module directory (as source; compiled beside it)."""
    parts = name.split(".")
    if os.path.basename(source) == "__init__.py":
        parts.append("__init__")
    return "/".join(parts) + ".py"


def needs_from(toc: Mapping[str, Sequence[Sequence[str]]], base_library: Iterable[str], stdlib: Path) -> Needs:
    """The analysis' tables as :class:`Needs`. ``base_library``: the names in
    PyInstaller's ``base_library.zip`` (the modules the interpreter's start
    imports, which the analysis keeps out of its table)."""
    modules = {module_file(name, src): Path(src) for name, src, kind in toc["pure"] if kind == "PYMODULE"}
    for entry in base_library:
        if entry.endswith(".pyc"):
            modules[entry[:-1]] = stdlib / entry[:-1]
    extensions = {dest.split("lib-dynload/", 1)[-1]: Path(src) for dest, src, kind in toc["binaries"]
                  if kind == "EXTENSION"}
    data = {dest: Path(src) for dest, src, kind in toc["datas"] if kind == "DATA" and dest != "base_library.zip"}
    return Needs(modules, extensions, data)


def analyse(work: Path) -> Needs:
    """PyInstaller's analysis of the entry points (``sysext/analysis.spec``)."""
    import PyInstaller.__main__

    dist, pyinstaller_work = work / "analysis", work / "pyinstaller"
    spec = REPO / "sysext/analysis.spec"
    print(f"+ pyinstaller {spec}", file=sys.stderr)
    dist.mkdir(parents=True, exist_ok=True)
    PyInstaller.__main__.run(["--noconfirm", "--clean", "--log-level", "ERROR", "--distpath", str(dist),
                              "--workpath", str(pyinstaller_work), str(spec)])
    toc = json.loads((dist / ANALYSIS_FILE).read_text())
    base = next(Path(src) for dest, src, _ in toc["datas"] if dest == "base_library.zip")
    with zipfile.ZipFile(base) as archive:
        names = archive.namelist()
    return needs_from(toc, names, Path(os.__file__).parent)


def elf_files(directory: Path) -> list[Path]:
    out = []
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    out.append(path)
    return out


#: ``ldd``'s lines: ``name => /path (0x…)``, ``/path/ld.so (0x…)``, ``name => not found``.
LDD_LINE = re.compile(r"^\s*(?:(\S+) => )?(not found|\S+)(?: \(0x[0-9a-f]+\))?$")


def ldd_libraries(output: str, origin: str) -> dict[str, str]:
    """Library name → file from one ``ldd`` listing (the kernel's vDSO left out)."""
    found = {}
    for line in output.splitlines():
        match = LDD_LINE.match(line)
        if not match or "statically linked" in line:
            continue
        name, target = match[1] or os.path.basename(match[2]), match[2]
        if target == "not found":
            raise BuildError(f"{origin} needs {name}, which is found nowhere")
        if name.startswith(("linux-vdso.so", "linux-gate.so")):
            continue
        found[name] = target
    return found


def libraries_of(elves: Iterable[Path]) -> dict[str, Path]:
    """Every shared library the ELF files load, the loader and C library
    included, by the name they load it by (the build host's files)."""
    found: dict[str, Path] = {}
    for elf in elves:
        for name, target in ldd_libraries(run(["ldd", str(elf)], quiet=True).stdout, str(elf)).items():
            found.setdefault(name, Path(target))
    return found


def loader_name(libraries: Mapping[str, Path]) -> str:
    """The dynamic loader among the libraries: the program's ELF interpreter."""
    loaders = sorted(name for name in libraries if name.startswith("ld-linux"))
    if len(loaders) != 1:
        raise BuildError(f"expected one dynamic loader among the libraries, found {loaders or 'none'}")
    return loaders[0]


def compile_modules(sources: Path, prefix: str) -> None:
    """Byte-compile the module tree in place, each ``a.py`` to ``a.pyc`` beside it
    (sourceless: the importer looks for nothing else), reproducibly: a fixed hash
    seed (set literals), ``unchecked-hash`` (no source time, and nothing to
    stat on the node), the file names the node sees."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"}
    run([sys.executable, "-I", "-m", "compileall", "-q", "-b", "--invalidation-mode", "unchecked-hash",
         "-s", str(sources), "-p", f"{prefix}/lib/{PYTHON_DIR}", str(sources)], env)
    for source in sorted(sources.rglob("*.py")):
        source.unlink()


def installdirs_module(layout: Mapping[str, str]) -> str:
    """``torcx_tectonic/installdirs.py`` naming ``layout``'s directories (what ``make install`` writes)."""
    text = (REPO / "torcx_tectonic/installdirs.py").read_text()
    for key, value in layout.items():
        text, count = re.subn(rf"^{key} = .*$", f"{key} = {json.dumps(value)}", text, flags=re.M)
        if count != 1:
            raise BuildError(f"torcx_tectonic/installdirs.py has no line {key} = ...")
    return text


def lay_out_program(program: Path, prefix: str, needs: Needs, dirs: Mapping[str, str]) -> str:
    """The program under ``program`` (which the node sees as ``prefix``): the
    interpreter, its modules and every library; the package names ``dirs``.
    Returns the loader's name."""
    modules = program / "lib" / PYTHON_DIR
    for relative, source in sorted(needs.modules.items()):
        (modules / relative).parent.mkdir(parents=True, exist_ok=True)
        if relative == "torcx_tectonic/installdirs.py":
            (modules / relative).write_text(installdirs_module(dirs))
        else:
            shutil.copyfile(source, modules / relative)
    compile_modules(modules, prefix)
    for relative, source in sorted({**needs.extensions, **needs.data}.items()):
        (modules / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, modules / relative)
    interpreter = Path(os.path.realpath(sys._base_executable))  # type: ignore[attr-defined]
    (program / "bin").mkdir(parents=True)
    shutil.copy(interpreter, program / "bin/python3")
    # With a ._pth file beside it the interpreter searches no landmark and reads
    # no environment for sys.path: just these directories (relative to the file).
    (program / "bin/python3._pth").write_text(f"../lib/{PYTHON_DIR}\n")
    libraries = libraries_of([interpreter, *sorted(needs.extensions.values())])
    for name, source in sorted(libraries.items()):
        shutil.copy(source, program / "lib" / name)
    loader = loader_name(libraries)
    # DT_RPATH, not DT_RUNPATH: searched before $LD_LIBRARY_PATH (a node's cannot
    # redirect the program), and for the libraries of every module it loads too.
    run(["patchelf", "--set-interpreter", f"{prefix}/lib/{loader}", "--force-rpath", "--set-rpath", "$ORIGIN/../lib",
         str(program / "bin/python3")])
    normalise_modes(program)
    return loader


def check_self_contained(program: Path, loader: str) -> None:
    """Every ELF file of the program loads its libraries from the program alone,
    as listed by the program's own loader without the build host's
    ld.so.cache: the interpreter by its own ``DT_RPATH``, the modules it loads
    with that path given (it reaches their libraries only where they have no
    library path of their own: none may have one)."""
    lib = program / "lib"
    outside: list[str] = []
    for elf in elf_files(program):
        if elf.name == loader:
            continue
        dynamic = run(["readelf", "-d", str(elf)], quiet=True).stdout
        if elf != program / "bin/python3" and re.search(r"\((RUNPATH|RPATH)\)", dynamic):
            outside.append(f"{elf.relative_to(program)} has a library path of its own")
        path = [] if elf == program / "bin/python3" else ["--library-path", str(lib)]
        listing = run([str(lib / loader), "--inhibit-cache", *path, "--list", str(elf)], quiet=True).stdout
        for name, target in ldd_libraries(listing, str(elf)).items():
            if os.path.dirname(os.path.normpath(target)) != str(lib) and name != loader:
                outside.append(f"{elf.relative_to(program)} loads {name} from {target}")
    if outside:
        raise BuildError("the program would take libraries from the node: " + "; ".join(outside))


def kernel_requirement(libc: Path) -> str:
    """The oldest kernel the bundled C library runs on (its ``NT_GNU_ABI_TAG`` note)."""
    notes = run(["readelf", "--notes", str(libc)], quiet=True).stdout
    match = re.search(r"OS: Linux, ABI: ([\d.]+)", notes)
    if not match:
        raise BuildError(f"{libc}: no ABI tag note naming the oldest kernel")
    return match[1]


def glibc_version(libc: Path) -> str:
    """The bundled C library's version (``gnu_get_libc_version``, from its banner)."""
    match = re.search(rb"GNU C Library [^\n]*?version (\d+\.\d+)", libc.read_bytes())
    if not match:
        raise BuildError(f"{libc}: no GNU C Library version banner")
    return match[1].decode()


def install_around(tree: Path, layout: Layout, scripts: Mapping[str, Path]) -> None:
    """Lay out what goes around the program (already in the tree): the entry
    points where ``make install`` would put them for ``layout``, the units with
    their placeholders filled in, the documentation."""
    dirs = layout.dirs
    entry_points = {f"{layout.generator_dir}/{GENERATOR}": scripts[GENERATOR],
                    **{f"{dirs['BIN_DIR']}/{p.name}": p for p in scripts.values() if p.parent.name == "bin"},
                    **{f"{dirs['LIBEXEC_DIR']}/{p.name}": p for p in scripts.values() if p.parent.name == "libexec"}}
    for path, source in entry_points.items():
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(entry_script(source.read_text(), layout.prefix))
        target.chmod(0o755)
    unit_dir = tree / dirs["SYSTEMD_UNIT_DIR"].lstrip("/")
    unit_dir.mkdir(parents=True, exist_ok=True)
    for unit in sorted((REPO / "units").iterdir()):
        (unit_dir / unit.name).write_text(substitute_unit(unit.read_text(), str(unit), dirs))
    doc_dir = tree / dirs["DOC_DIR"].lstrip("/")
    doc_dir.mkdir(parents=True)
    shutil.copyfile(REPO / "README.md", doc_dir / "README.md")
    shutil.copytree(REPO / "docs", doc_dir / "docs")  # the pages the README links


def normalise_modes(tree: Path) -> None:
    """0755 for directories and executables, 0644 for the rest (whatever the build host's umask)."""
    for entry in tree.rglob("*"):
        if not entry.is_symlink():
            entry.chmod(0o755 if entry.is_dir() or os.access(entry, os.X_OK) else 0o644)


def bundled_sources(needs: Needs, program: Path) -> list[str]:
    """What ``dpkg -S`` is asked about: the libraries by name, the interpreter,
    and the directory of each top-level module the program holds (the
    repository's own left out)."""
    sources = {lib.name for lib in elf_files(program / "lib")}
    sources.add(os.path.realpath(sys._base_executable))  # type: ignore[attr-defined]
    for relative, source in {**needs.modules, **needs.extensions}.items():
        top = relative.split("/")[0]
        depth = relative.count("/")
        origin = source.parents[depth] / top if depth else source
        if REPO not in origin.parents:
            sources.add(str(origin))
    return sorted(sources)


def bundled_packages(sources: Sequence[str]) -> list[str]:
    """The Debian packages the program takes files from."""
    found = subprocess.run(["dpkg", "-S", *sources], capture_output=True, text=True, check=False).stdout
    return sorted({pkg.split(":")[0].strip() for line in found.splitlines() for pkg in line.split(": ")[0].split(",")})


def collect_licenses(target: Path, packages: Iterable[str]) -> list[str]:
    """The copyright files of what the install bundles (the program carries
    binaries of other projects: the interpreter, the C library, ...)."""
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for package in packages:
        copyright_file = Path("/usr/share/doc") / package / "copyright"
        if copyright_file.is_file():
            shutil.copyfile(copyright_file, target / f"{package}.copyright")
            names.append(package)
    if not names:
        raise BuildError("no licence of a bundled component was found; the image must carry them")
    return names


def squash(tree: Path, raw: Path, epoch: int) -> None:
    """The image file: squashfs, owned by root, without the build host's xattrs,
    every time the given one (mksquashfs sorts the directories itself)."""
    tmp = raw.with_name(raw.name + ".tmp")
    tmp.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}  # it refuses both ways at once
    run(["mksquashfs", str(tree), str(tmp), "-noappend", "-all-root", "-no-xattrs", "-quiet", "-no-progress",
         "-mkfs-time", str(epoch), "-all-time", str(epoch)], env)
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


@dataclass(frozen=True)
class Program:
    """A program laid out for one layout, with everything around it, in ``tree``."""

    tree: Path
    glibc: str
    kernel: str


def build_program(tree: Path, layout: Layout, needs: Needs, arch: str) -> Program:
    """The program for ``layout`` and what goes around it, into an empty ``tree``:
    checked self-contained, its licences and build information beside it."""
    from torcx_tectonic import __version__

    if tree.exists():
        shutil.rmtree(tree)
    scripts = commands()
    program = tree / layout.prefix.lstrip("/")
    loader = lay_out_program(program, layout.prefix, needs, layout.dirs)
    check_self_contained(program, loader)
    install_around(tree, layout, scripts)
    licensed = collect_licenses(tree / layout.licences, bundled_packages(bundled_sources(needs, program)))
    glibc, kernel = glibc_version(program / "lib/libc.so.6"), kernel_requirement(program / "lib/libc.so.6")
    info = {"version": __version__, "architecture": arch, "python": platform.python_version(), "glibc": glibc,
            "kernel_minimum": kernel, "prefix": layout.prefix, "commands": sorted(scripts), "licences": licensed}
    (tree / layout.build_info).parent.mkdir(parents=True, exist_ok=True)
    (tree / layout.build_info).write_text(json.dumps(info, indent=1) + "\n")
    return Program(tree, glibc, kernel)


def build(output: Path, work: Path | None = None) -> Image:
    """The whole build; returns what it made (the image is ``output/NAME-VERSION-ARCH.raw``)."""
    from torcx_tectonic import __version__
    from torcx_tectonic.config import render_default

    arch = systemd_arch()
    epoch = source_date_epoch()
    work = work or output / "sysext"
    tree = work / "tree"
    program = build_program(tree, SYSEXT, analyse(work), arch)
    (tree / ACTIVATION_DROPIN).parent.mkdir(parents=True)
    (tree / ACTIVATION_DROPIN).write_text(ACTIVATION)
    (tree / EXAMPLE_CONFIG).parent.mkdir(parents=True, exist_ok=True)
    (tree / EXAMPLE_CONFIG).write_text(render_default())
    release = tree / f"usr/lib/extension-release.d/extension-release.{NAME}"
    release.parent.mkdir(parents=True)
    release.write_text(extension_release(arch))
    normalise_modes(tree)
    raw = output / image_name(__version__, arch)
    squash(tree, raw, epoch)
    digest = sha512(raw)
    Path(f"{raw}.sha512").write_text(f"{digest}  {raw.name}\n")
    example = json.loads((REPO / IGNITION_EXAMPLE).read_text())
    ignition = raw.with_suffix(".ign")
    ignition.write_text(json.dumps(render_ignition(example, raw.name, digest), indent=2) + "\n")
    return Image(raw=raw, ignition=ignition, tree=tree, version=__version__, arch=arch, sha512=digest,
                 glibc=program.glibc, kernel=program.kernel)


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
    print(f"{image.raw} ({size / 2**20:.1f} MiB; brings glibc {image.glibc}, needs Linux >= {image.kernel})")
    print(f"sha512 {image.sha512}")
    print(f"verification.hash: sha512-{image.sha512}")
    print(f"{image.ignition}: the Ignition example for this image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
