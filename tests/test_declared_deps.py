"""Every package genrekit imports is declared in setup.cfg with a floor (install_requires, or an
extra when it is imported only inside the function that needs it), constraints/lowest.txt pins
exactly those floors (.ci/lowest installs them), and every module imports."""
from __future__ import annotations

import ast
import configparser
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("genrekit", "data_tools", "models", "evaluation")
DIST = {"PIL": "pillow", "sklearn": "scikit-learn", "apache_beam": "apache-beam", "python_multipart": "python-multipart"}  # import name -> distribution


def _requirements() -> tuple[dict[str, str], dict[str, str]]:
    """(install_requires, extras) as {distribution: floor}."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")

    def parse(text):
        out = {}
        for line in text.splitlines():
            line = line.split("#")[0].strip()
            if line:
                m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", line)
                assert m, f"setup.cfg: {line!r} is not 'name>=floor'"
                out[m.group(1).lower()] = m.group(2)
        return out

    extras = {}
    for key in cfg["options.extras_require"]:
        extras.update(parse(cfg["options.extras_require"][key]))
    return parse(cfg["options"]["install_requires"]), extras


def _third_party_imports(files) -> dict[str, dict[str, bool]]:
    """{top-level import name: {file: imported at module level?}} for non-stdlib, non-genrekit names."""
    out: dict[str, dict[str, bool]] = {}
    for path in files:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
        top_level = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "genrekit" or top == "__future__":
                    continue
                seen = out.setdefault(top, {})
                seen[str(path)] = seen.get(str(path), False) or id(node) in top_level
    return out


def _undeclared(files, required: dict, extras: dict) -> list[str]:
    bad = []
    for name, where in sorted(_third_party_imports(files).items()):
        dist = DIST.get(name, name.lower().replace("_", "-"))
        if dist in required:
            continue
        if dist in extras:
            bad += [f"{f}: {name} (an extra) imported at module level" for f, top in where.items() if top]
            continue
        bad.append(f"{name} ({', '.join(sorted(where))}) is not declared in setup.cfg")
    return bad


def _package_files():
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def test_the_check_can_fail(tmp_path):
    (tmp_path / "a.py").write_text("import numpy\nimport scipy.signal\nfrom yaml import safe_load\n"
                                   "import onnx\n\ndef f():\n    import tf2onnx\n")
    bad = _undeclared([tmp_path / "a.py"], {"numpy": "1"}, {"onnx": "1", "tf2onnx": "1"})
    assert len(bad) == 3 and "onnx (an extra)" in bad[0] and bad[1].startswith("scipy") and bad[2].startswith("yaml")


def test_every_imported_package_is_declared():
    required, extras = _requirements()
    assert not _undeclared(_package_files(), required, extras)


def test_lowest_constraints_are_the_declared_floors():
    required, extras = _requirements()
    pins = {}
    for line in (ROOT / "constraints" / "lowest.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    assert pins == {**required, "pytest": extras["pytest"]}
    assert "lowest" not in (ROOT / ".ci" / "run").read_text()  # scheduled, not in every CI run


def test_every_module_imports(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "import_every_module.py")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"imported (\d+) of \1 genrekit modules", r.stdout)
