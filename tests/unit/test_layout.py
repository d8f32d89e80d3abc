"""The package's shape: no import circles, and the start-up tricks (imports
inside functions, ``TYPE_CHECKING = False``) only where they pay: in the
modules the generator loads at every boot, and where a step would otherwise
load a library it may not use (requests, pystemd, PyYAML)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "torcx_tectonic"

#: Imports deferred into a function outside the generator's modules, each
#: because the module it names loads a library of tens of milliseconds that
#: most callers never use: (importing module, imported module).
DEFERRED = {
    ("torcx_tectonic.node.systemd", "pystemd.systemd1"),
    ("torcx_tectonic.node.updateengine", "pystemd.dbuslib"),
    ("torcx_tectonic.steps.addons", "torcx_tectonic.torcx.bucket"),  # requests: only for a missing addon
    ("torcx_tectonic.cluster.view", "torcx_tectonic.cluster.kube"),  # requests: only to ask the api-server
    ("torcx_tectonic.cluster.mappings", "torcx_tectonic.edges.yamldoc"),  # PyYAML: only to read a document
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, node: ast.ImportFrom | ast.Import, is_package: bool) -> list[str]:
    """The package's or the library's modules an import statement names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        base = node.module or ""
    else:
        parts = name.split(".") if is_package else name.split(".")[:-1]
        parts = parts[:len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    found = modules()
    named = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in found]
    return named or [base]


def imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(module-level imports, imports inside functions) of one module."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    inner: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                (inner if in_function else top).update(imported(name, child, is_package))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return top, inner


def generator_modules() -> set[str]:
    """What the generator really loads, rendering the shipped configuration
    and one that sets every key."""
    probe = (
        "import sys, tempfile, os\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from torcx_tectonic import config, generator\n"
        "shipped = config.render_default()\n"
        "every = ''.join(l[1:] + '\\n' if l.startswith('#') and ' = ' in l else l + '\\n'\n"
        "                for l in shipped.splitlines())\n"
        "for text in (shipped, every):\n"
        "    d = tempfile.mkdtemp()\n"
        "    open(os.path.join(d, 'main.conf'), 'w').write(text)\n"
        "    loaded = config.load(os.path.join(d, 'main.conf'), os.path.join(d, 'none.d'), check=False)\n"
        "    os.mkdir(os.path.join(d, 'out'))\n"
        "    generator.write(generator.render(loaded), os.path.join(d, 'out'))\n"
        "print(' '.join(m for m in sys.modules if m.startswith('torcx_tectonic')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_no_module_imports_itself_through_others() -> None:
    graph = {name: set().union(*imports(name, path)) & set(modules()) for name, path in modules().items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        seen, todo = {start}, [[start]]
        while todo:
            trail = todo.pop()
            for nxt in graph[trail[-1]]:
                if nxt == goal:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append([*trail, nxt])
        return None

    circles = [trail for name in graph if (trail := reaches(name, name))]
    assert circles == [], " ; ".join(" -> ".join(c) for c in circles)


def test_start_up_tricks_only_where_they_pay() -> None:
    lean = generator_modules()
    assert "torcx_tectonic.generator" in lean and "torcx_tectonic.steps.runner" not in lean
    tricks = []
    for name, path in modules().items():
        if name in lean:
            continue
        if "TYPE_CHECKING = False" in path.read_text():
            tricks.append(f"{name}: TYPE_CHECKING = False")
        _, inner = imports(name, path)
        tricks += [f"{name}: imports {target} inside a function" for target in sorted(inner)
                   if (name, target) not in DEFERRED]
    assert tricks == []


def test_every_deferred_import_is_still_deferred() -> None:
    """The list above names no import that moved to the top (it would hide a new one)."""
    for name, target in DEFERRED:
        _, inner = imports(name, modules()[name])
        assert target in inner, f"{name} no longer defers {target}: drop it from DEFERRED"
