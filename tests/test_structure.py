"""The package's shape (issue 14): genrekit installs under its own name only, and no module
of it imports another in a loop — not even through an import deferred inside a function."""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
from pathlib import Path

import pytest

import genrekit

PACKAGES = {"genrekit": "genrekit", "genrekit.commands": "commands", "genrekit.data_tools": "data_tools",
            "genrekit.models": "models", "genrekit.evaluation": "evaluation", "genrekit.tasks": "tasks"}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(list(spec.submodule_search_locations)[0])


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted(_package_dir(pkg).glob("*.py")):
            name = pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"
            mods[name] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every genrekit module ``name`` imports, at module level or inside a function."""
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.stem == "__init__" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_cycle_finder_sees_a_cycle_through_a_deferred_import(tmp_path):
    """The check itself can fail: two modules importing each other, one of them inside a function."""
    (tmp_path / "a.py").write_text("from genrekit.b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from genrekit.a import g\n")
    known = {"genrekit.a", "genrekit.b"}
    graph = {"genrekit.a": _imports("genrekit.a", tmp_path / "a.py", known),
             "genrekit.b": _imports("genrekit.b", tmp_path / "b.py", known)}
    assert _find_cycle(graph) == ["genrekit.a", "genrekit.b", "genrekit.a"]
    assert _find_cycle({"genrekit.a": set(), "genrekit.b": {"genrekit.a"}}) is None


def test_no_import_cycle_inside_the_package():
    graph = _import_graph()
    assert len(graph) > 40  # every module was found
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_subpackages_never_import_the_application_layer():
    """data_tools, models and evaluation are libraries: they never import genrekit's top layer."""
    graph = _import_graph()
    top = {m for m in graph if m.count(".") == 1 and not m.startswith(tuple(f"{p}" for p in PACKAGES if p != "genrekit"))}
    for name, targets in graph.items():
        if name.startswith(("genrekit.data_tools", "genrekit.models", "genrekit.evaluation")):
            bad = sorted(t for t in targets if t in top or t == "genrekit")
            assert not bad, f"{name} imports {bad}"


def test_subpackages_resolve_inside_genrekit():
    import genrekit.data_tools
    import genrekit.evaluation
    import genrekit.models

    for pkg in (genrekit.data_tools, genrekit.models, genrekit.evaluation):
        assert pkg.__name__.startswith("genrekit.")


def _site_packages_entries(dist) -> set[str]:
    entries = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if parts and parts[0] not in ("..", "") and not os.path.isabs(str(f)):
            entries.add(parts[0])
    return entries


def test_installation_puts_only_genrekit_into_site_packages():
    """What ``pip install .`` (or ``-e .``) recorded: nothing but genrekit, its dist-info and,
    for an editable install, its path hook — whose map names only genrekit packages."""
    # the installed distribution (with a RECORD), not a build's egg-info left in the checkout
    dists = [d for d in importlib.metadata.distributions(name="genrekit") if d.read_text("RECORD")]
    if not dists:
        pytest.skip("genrekit is not installed (running from a bare checkout)")
    dist = dists[0]
    entries = _site_packages_entries(dist)
    assert entries, "the installation recorded no files"
    allowed = re.compile(r"^(genrekit|genrekit-[^/]+\.dist-info|__editable__\.genrekit-[^/]+\.pth"
                         r"|__editable___genrekit_[\w]+_finder\.py|__pycache__)$")
    stray = sorted(e for e in entries if not allowed.match(e))
    assert not stray, f"installed outside genrekit: {stray}"
    assert "bin" not in entries
    for f in dist.files or ():
        if str(f).endswith("_finder.py"):
            text = Path(dist.locate_file(f)).read_text(encoding="utf-8")
            mapping = re.search(r"MAPPING\s*(?::[^=]*)?=\s*(\{.*?\})", text, re.S)
            assert mapping, "editable finder without a MAPPING"
            names = re.findall(r"'([\w.]+)'\s*:", mapping.group(1))
            assert names and all(n == "genrekit" or n.startswith("genrekit.") for n in names), names
    # and what was installed really is the package, with the data files
    assert (_package_dir("genrekit.data_tools") / "splits_data").is_dir()


def test_a_users_models_package_does_not_shadow_genrekits(tmp_path, monkeypatch):
    """A project with its own ``models`` package on the path: genrekit still finds its own."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("raise ImportError('the user project models')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import genrekit.models.registry as registry

    assert registry.DEFAULT_ARCH
    assert Path(genrekit.__file__).parent.name == "genrekit"


# Imports inside a function are only for loading a heavy library when a command needs it
# (TensorFlow above all: ~5 s; also librosa, matplotlib, scikit-learn, the export converters,
# Apache Beam), so that `genrekit --help` and the light commands stay fast. An import of
# genrekit's own module inside a function is allowed only when that module loads one of them.
HEAVY = {"tensorflow", "keras", "librosa", "matplotlib", "sklearn", "scipy", "audiomentations", "soundfile",
         "soxr", "numba", "apache_beam", "tf2onnx", "onnx", "onnxruntime", "musicnn", "PIL", "tqdm", "requests",
         "threadpoolctl", "spotipy",
         "starlette", "uvicorn", "python_multipart", "websockets"}


def _module_level_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def _deferred_imports(mods: dict[str, Path]) -> list[tuple[str, str, str]]:
    """(module, function, imported name) for every import inside a function that defers nothing heavy."""
    known = set(mods)
    tops = {m: _module_level_imports(p) for m, p in mods.items()}

    def resolve(name):
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name

    heavy_cache: dict[str, bool] = {}

    def heavy(mod, seen=frozenset()):
        if mod not in heavy_cache:
            heavy_cache[mod] = any(
                x.split(".")[0] in HEAVY
                or ((r := resolve(x)) and r != mod and r not in seen and heavy(r, seen | {mod}))
                for x in tops[mod])
        return heavy_cache[mod]

    bad = []
    for mod, path in mods.items():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                         else [])
                for name in names:
                    if name.split(".")[0] in HEAVY:
                        continue
                    target = resolve(name)
                    if target and heavy(target):
                        continue
                    bad.append((mod, fn.name, name))
    return sorted(set(bad))


def test_deferred_import_check_can_fail(tmp_path):
    (tmp_path / "a.py").write_text("import json\n\ndef f():\n    import tensorflow\n    from genrekit.b import g\n")
    (tmp_path / "b.py").write_text("import numpy\n\ndef g():\n    import json\n")
    (tmp_path / "c.py").write_text("import keras\n")
    (tmp_path / "d.py").write_text("def h():\n    from genrekit.c import x\n")
    bad = _deferred_imports({"genrekit.a": tmp_path / "a.py", "genrekit.b": tmp_path / "b.py",
                             "genrekit.c": tmp_path / "c.py", "genrekit.d": tmp_path / "d.py"})
    assert bad == [("genrekit.a", "f", "genrekit.b"), ("genrekit.b", "g", "json")]


def test_imports_inside_functions_only_defer_heavy_libraries():
    bad = _deferred_imports(_modules())
    assert not bad, f"{len(bad)} imports inside functions defer nothing heavy: " + "; ".join(
        f"{m}.{f}: {n}" for m, f, n in bad[:40])
