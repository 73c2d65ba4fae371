"""The examples in genrekit's docstrings run and print what they say (``>>>`` lines)."""
from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"genrekit": ROOT / "genrekit", "genrekit.data_tools": ROOT / "data_tools",
            "genrekit.models": ROOT / "models", "genrekit.evaluation": ROOT / "evaluation"}


def modules_with_examples() -> list[str]:
    names = []
    for pkg, folder in PACKAGES.items():
        for p in sorted(folder.rglob("*.py")):
            if ">>> " in p.read_text(encoding="utf-8"):
                rel = p.relative_to(folder).with_suffix("")
                names.append(".".join((pkg, *rel.parts)).removesuffix(".__init__"))
    return names


def test_some_docstrings_have_examples():
    assert len(modules_with_examples()) >= 2


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0 and res.attempted > 0, f"{name}: {res}"
