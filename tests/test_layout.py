"""The package's floors: imports run one way, the library never imports Streamlit, and a wheel carries everything."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tokconv"

# Lowest first: a module may import its own floor and the floors below it, never one above.
FLOORS = {
    "errors": 0, "paths": 0, "version": 0,
    "fastpath": 1,
    "models": 2,
    "engine": 3,
    "experiments": 4,
    "analysis": 5, "store": 5,
    "commands": 6, "cli": 6, "__main__": 7, "__init__": 7,
}


def _room(module: str) -> str:
    """The floor name of a dotted module inside tokconv ('tokconv.engine.rows' -> 'engine')."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    """Every tokconv module that ``path`` imports, relative imports resolved."""
    rel = path.relative_to(ROOT).with_suffix("")
    here = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from a import b` imports the module a.b when there is one, else the name b of module a
            subs = [f"{target}.{a.name}" for a in node.names]
            names = [n for n in subs if n in _known()] or [target]
            names += [target] if len(names) < len(subs) else []
            found += [n for n in names if n.startswith("tokconv")]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("tokconv")]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _known() -> set[str]:
    """Dotted names of every module and package of tokconv."""
    return {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _modules()}


def test_imports_run_down_the_floors_only():
    wrong = []
    known = _known()
    for path in _modules():
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mine = _room(module)
        if mine == "__init__" and module != "tokconv.__init__":
            mine = _room(module.removesuffix(".__init__"))
        for target in (t for t in _imports(path) if t in known):
            theirs = _room(target)
            if target == "tokconv" or theirs not in FLOORS:
                theirs = "__init__"
            if FLOORS[theirs] > FLOORS[mine]:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports that climb a floor:\n" + "\n".join(wrong)


def test_every_module_belongs_to_a_floor():
    rooms = {_room(".".join(p.relative_to(ROOT).with_suffix("").parts)) for p in _modules()}
    assert rooms <= FLOORS.keys(), rooms - FLOORS.keys()


def test_library_never_imports_streamlit():
    """Import every module of the package in a fresh process: Streamlit must not come along."""
    names = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _modules()]
    names.remove("tokconv.__main__")  # importing it runs the command line
    code = "import sys, importlib\nfor n in %r: importlib.import_module(n)\nsys.exit('streamlit' in sys.modules)" % names
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:] or "streamlit was imported"


def test_public_api_is_the_package_face():
    import tokconv

    for name in ("load", "Scorer", "RunConfig", "run", "prepare", "RunResult", "TokconvError"):
        assert hasattr(tokconv, name), name


@pytest.mark.slow
def test_wheel_carries_every_subpackage_and_c_source(tmp_path):  # and the headers they include
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = next(tmp_path.glob("tokconv-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    want_c = {str(p.relative_to(ROOT)) for p in [*PACKAGE.rglob("*.c"), *PACKAGE.rglob("*.h")]}
    want_packages = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("__init__.py")}
    assert len(want_c) >= 5 and want_c <= names, want_c - names
    assert want_packages <= names, want_packages - names


def test_no_import_cycles():
    """Module by module (a package is its __init__), no chain of imports comes back to where it started."""
    graph: dict[str, set[str]] = {}
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in _modules()}
    for name, path in modules.items():
        graph[name] = {t for t in _imports(path) if t in modules and t != name}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):
                continue  # a package's __init__ importing its own modules is how packages work
            if state.get(nxt) == 1:
                cycle.extend(trail[trail.index(nxt):] + [node, nxt] if nxt in trail else [node, nxt])
                return True
            if state.get(nxt) is None and visit(nxt, trail + [node]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, []):
            break
    assert not cycle, " -> ".join(cycle)
