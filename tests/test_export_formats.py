"""The export formats' table: the names and suffixes the CLI takes are derived from it, the bundle's
file names are the model card's, and the example that runs a bundle without genrekit runs ONNX and
TFLite with the very code of the table's entries (it cannot import genrekit, so the code is kept
equal here)."""
import ast
import importlib.util
import zipfile
from pathlib import Path

import pytest

from genrekit import export
from genrekit.errors import UserError
from genrekit.modelcard import MODEL_FILES
from genrekit.runs import EXPORT_MARKER

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "predict_export.py"


def _functions(tree: ast.Module) -> dict:
    return {n.name: ast.dump(n) for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_names_and_suffixes_come_from_the_table():
    assert export.FORMATS == ("keras", "saved_model", "tflite", "onnx")
    assert export.SUFFIX_FORMATS == {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
    assert {f.name: f.file for f in export.TABLE} == MODEL_FILES
    assert [f.name for f in export.TABLE if f.folder] == ["saved_model"]
    known = r"\(known: keras, saved_model, tflite, onnx\)"
    with pytest.raises(UserError, match=r"unknown export format 'h5' " + known):
        export.format_named("h5")
    with pytest.raises(UserError, match=r"^unknown export format 'h5'$"):
        export.run_exported(Path("m.h5"), "h5", [[0.0]])


def test_the_example_runs_onnx_and_tflite_with_the_tables_code():
    mine = _functions(ast.parse(Path(export.__file__).read_text()))
    theirs = _functions(ast.parse(EXAMPLE.read_text()))
    for name in ("run_onnx", "run_tflite"):
        assert mine[name] == theirs[name], name
    spec = importlib.util.spec_from_file_location("predict_export_example_formats", EXAMPLE)
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    by_suffix = {f.suffix: f.run.__name__ for f in export.TABLE if not f.folder}
    assert {s: fn.__name__ for s, fn in ex.RUNNERS.items()} == {s: by_suffix[s] for s in ex.RUNNERS}


def test_recognising_an_earlier_export(tmp_path):
    keras_file = tmp_path / "model.keras"
    with zipfile.ZipFile(keras_file, "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("metadata.json", "{}")
    tflite_file = tmp_path / "model.tflite"
    tflite_file.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 24)
    saved = tmp_path / "saved_model"
    saved.mkdir()
    (saved / EXPORT_MARKER).write_text("{}")
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a model at all")
    assert export.is_export_file(keras_file, "keras")
    assert export.is_export_file(tflite_file, "tflite")
    assert export.is_export_file(saved, "saved_model")
    for fmt in export.FORMATS:
        assert not export.is_export_file(junk, fmt)
        assert not export.is_export_file(tmp_path / "missing", fmt)
    assert not export.is_export_file(keras_file, "tflite")
    assert not export.is_export_file(tflite_file, "keras")
    assert not export.is_export_file(keras_file, "h5")
