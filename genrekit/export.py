"""``genrekit export``: a run's model as .keras, SavedModel, TFLite or ONNX, in a self-describing
bundle (:func:`export_bundle`: the model files, labels.json, feature_config.json,
calibration.json and a model card) or as one model file (:func:`export`)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrekit.data_tools.fsio import loads_json, write_json_atomic, write_text_atomic
from genrekit.errors import UserError
from genrekit.modelcard import model_card, model_card_markdown
from genrekit.openset import OPENSET_FILE, load_distance_stats
from genrekit.runs import (
    EXPORT_MARKER,
    Run,
    atomic_output,
    enclosing_owner,
    load_model,
    refuse_inside_owner,
)

BUNDLE_SIDE_FILES = ("labels.json", "feature_config.json", "calibration.json", "MODEL_CARD.md",
                     "model_card.json")


@dataclass(frozen=True)
class Format:
    """One export format. ``name`` is its ``--format``; ``file`` its name in a bundle and in
    ``RUN/export/`` (a folder when ``folder``, else a file whose suffix an ``--out FILE`` may
    end in); ``what`` what an earlier export of it is called in a refusal; ``write(model,
    path)`` writes it, ``recognise(path)`` says whether ``path`` is such an export, ``run(path,
    x)`` gives its outputs on ``x``, and ``check()`` refuses, in one line, a format whose
    converter is not installed."""
    name: str
    file: str
    folder: bool
    what: str
    write: Callable
    recognise: Callable[[Path], bool]
    run: Callable[[Path, np.ndarray], np.ndarray]
    check: Callable[[], None] = lambda: None

    @property
    def suffix(self) -> str:
        """What an ``--out`` naming this format's model file alone ends in (``""`` for a folder)."""
        return "" if self.folder else Path(self.file).suffix


def export(run_path, fmt: str, out: str | None = None) -> Path:
    """Write the run's model in ``fmt`` to ``out`` (default ``RUN/export/...``), complete-or-absent:
    it is built under a temporary name and renamed into place when complete, so a failed
    re-export leaves the previous export as it was. An existing ``out`` is replaced only when it
    is a genrekit export of the same format; anything else is refused, never deleted."""
    f = format_named(fmt)
    run = Run(run_path)
    target = Path(out) if out else run.path / "export" / f.file
    if out is not None and not f.folder:
        replace, keep = _check_file_target(target, f, run)
    else:
        replace, keep = _check_target(target, f), []
    f.check()
    model = run.model()
    with atomic_output(target, folder=f.folder, replace=replace) as work:
        _write(model, f, work)
        made_by = {"format": f.name, "run": str(run.path.resolve())}
        if f.folder:
            marker = {**made_by, "arch": run.arch, "labels": run.labels}
            write_json_atomic(work / EXPORT_MARKER, marker, only_if_changed=False)
        elif out is not None:  # the record that lets a later export of this run (only) replace it
            record = {**made_by, "sha256": keep + [_sha256(work)]}
            write_json_atomic(_record_path(target), record, only_if_changed=False)
    return target


def format_named(name: str) -> Format:
    """The :class:`Format` called ``name``, or one line naming the known ones."""
    try:
        return BY_NAME[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown export format {name!r} (known: {', '.join(FORMATS)})") from None


def _record_path(target: Path) -> Path:
    """The record beside a single-file export: ``.<name>.genrekit-export.json``."""
    return target.with_name(f".{target.name}.genrekit-export.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _recorded(target: Path, run: Run) -> bool:
    """Whether ``target`` is a single-file export of ``run`` that nobody replaced since: its record
    names the run and the file's checksum (magic bytes or a file name prove nothing)."""
    rec = _record_path(target)
    if rec.is_symlink() or target.is_symlink() or not target.is_file():
        return False
    try:
        doc = loads_json(rec.read_text(encoding="utf-8"))
        return (isinstance(doc, dict) and doc.get("run") == str(run.path.resolve())
                and isinstance(doc.get("sha256"), list) and _sha256(target) in doc["sha256"])
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def _refuse_inside_owner(target: Path, run: Run, own_run_ok: bool) -> None:
    """Refuse a ``target`` inside a run folder or an export bundle (its parent folders are looked
    at): genrekit never writes into another run's or bundle's folder (nor, for a single file, into
    the run's own, where its checkpoint lies)."""
    owner = enclosing_owner(target)
    if (owner is not None and own_run_ok and owner[1] == "a run folder"
            and owner[0].resolve() == run.path.resolve()):
        return
    refuse_inside_owner(target)


def _check_file_target(target: Path, fmt: Format, run: Run) -> tuple[bool, list[str]]:
    """A single-file export (``--out FILE.keras|.tflite|.onnx``) goes to a path that does not
    exist, or replaces an earlier single-file export of the same run recorded as such. Returns
    (replace, the checksums of that earlier export, kept in the new record)."""
    if target.is_symlink():
        raise UserError(f"--out {target} is a symbolic link; give a new path")
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; --format {fmt.name} writes one file: "
                        f"give a file path (e.g. {target / fmt.file})")
    _refuse_inside_owner(target, run, own_run_ok=False)
    rec = _record_path(target)
    if rec.is_symlink() or (rec.exists() and not rec.is_file()):
        raise UserError(f"{rec} (the record of a single-file export) is not a regular file; "
                        "give a new --out")
    if not target.exists():
        if rec.exists() and not _is_record(rec):
            raise UserError(f"{rec} exists and genrekit did not write it; give a new --out")
        return False, []
    if not _recorded(target, run):
        raise UserError(f"--out {target} exists and is not an earlier single-file export of "
                        f"this run (no matching record {rec.name}); genrekit does not replace what "
                        "it did not write: choose a new --out")
    if not target.stat().st_mode & stat.S_IWUSR:
        raise UserError(f"--out {target} is read-only; genrekit does not replace a file made "
                        "read-only: choose a new --out")
    return True, [_sha256(target)]


def _is_record(rec: Path) -> bool:
    try:
        doc = loads_json(rec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return (isinstance(doc, dict) and isinstance(doc.get("run"), str)
            and isinstance(doc.get("sha256"), list))


def export_bundle(run_path, formats, out=None) -> Path:
    """Write the export bundle ``out`` (default ``RUN/export/``), a folder holding the model in
    each of ``formats`` (model.keras, saved_model/, model.tflite, model.onnx), ``labels.json``,
    ``feature_config.json``, ``calibration.json`` (the temperature), ``MODEL_CARD.md`` and
    ``model_card.json``. Complete-or-absent: the bundle is built under a temporary name and renamed
    into place, so a failed export leaves the previous bundle as it was. An existing ``out`` is
    replaced only when it is a genrekit bundle holding nothing else (or an empty folder, or a
    folder of earlier genrekit model exports); anything else is refused, never deleted."""

    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in BY_NAME]
    if unknown or not formats:
        raise UserError(f"unknown export format {', '.join(unknown) or repr('')} "
                        f"(known: {', '.join(FORMATS)})")
    run = Run(run_path)
    target = Path(out) if out else run.path / "export"
    _refuse_inside_owner(target, run, own_run_ok=True)
    replace = _check_bundle_target(target, run)
    for f in formats:
        BY_NAME[f].check()
    model = run.model()
    calibration = dict(getattr(run, "calibration", None) or {})
    temperature = float(getattr(run, "temperature", 1.0))
    calibration["temperature"] = temperature
    card = model_card(run, formats, temperature, calibration)
    with atomic_output(target, folder=True, replace=replace) as work:
        for f in formats:
            _write(model, BY_NAME[f], work / BY_NAME[f].file)
        write_json_atomic(work / "labels.json", list(run.labels), only_if_changed=False)
        write_json_atomic(work / "feature_config.json", run.feature_config.to_dict(),
                          only_if_changed=False)
        write_json_atomic(work / "calibration.json", calibration, only_if_changed=False)
        write_json_atomic(work / "model_card.json", card, only_if_changed=False)
        write_text_atomic(work / "MODEL_CARD.md", model_card_markdown(card), only_if_changed=False)
        side = list(BUNDLE_SIDE_FILES)
        # what --reject's distance rule needs
        if calibration.get("reject_rule") == "embedding_distance":
            load_distance_stats(run)  # a damaged file is refused, not shipped
            shutil.copyfile(run.path / OPENSET_FILE, work / OPENSET_FILE)
            side.append(OPENSET_FILE)
        files = sorted([BY_NAME[f].file for f in formats] + side)
        write_json_atomic(work / EXPORT_MARKER, {"bundle": 1, "formats": formats, "files": files,
                                                 "run": str(run.path.resolve()), "arch": run.arch,
                                                 "labels": run.labels}, only_if_changed=False)
    return target


def _need_tf2onnx() -> None:
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs tf2onnx and onnx (and onnxruntime to run the export): "
                        "from a genrekit checkout pip install \".[export]\", or pip install "
                        "tf2onnx onnx onnxruntime") from None


def _check_bundle_target(target: Path, run: Run) -> bool:
    """Refuse a bundle folder genrekit may not write; True when it holds an earlier genrekit
    export that may be replaced."""
    if target.is_symlink():
        raise UserError(f"--out {target} is a symbolic link; give a new path")
    if not target.exists():
        return False
    if not target.is_dir():
        raise UserError(f"--out {target} exists and is not a folder; an export bundle is a new "
                        f"folder (or give a path ending in {', '.join(SUFFIX_FORMATS)} to write "
                        "the model file alone)")
    names = {p.name for p in target.iterdir()}
    if not names:
        return False
    mine = set()
    try:
        marker = loads_json((target / EXPORT_MARKER).read_text(encoding="utf-8"))
        if (isinstance(marker, dict) and marker.get("bundle") == 1
                and isinstance(marker.get("files"), list)):
            mine = {f for f in marker["files"] if isinstance(f, str)} | {EXPORT_MARKER}
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    # models genrekit exported one by one into the run's own RUN/export/ (export() with no --out),
    # or model files recorded as this run's single-file exports; a model file elsewhere may be the
    # user's own
    by_file = {f.file: f for f in TABLE}
    own_dir = os.path.realpath(target) == os.path.realpath(run.path / "export")
    mine |= {n for n in names - mine if n in by_file and (
        (own_dir and by_file[n].recognise(target / n))
        or (not by_file[n].folder and _recorded(target / n, run)))}
    mine |= {n for n in names - mine if n.endswith(".genrekit-export.json") and n.startswith(".")
             and _recorded(target / n[1:-len(".genrekit-export.json")], run)}
    other = sorted(names - mine)
    if other:
        what = ("holds files genrekit did not write" if EXPORT_MARKER in mine
                else "is not a genrekit export bundle")
        raise UserError(f"--out {target} exists and {what} (e.g. {other[0]}); genrekit does not "
                        "replace what it did not write: choose a new --out")
    return True


def _write(model, fmt: Format, path: Path) -> None:
    """Write ``model`` as ``fmt``; the converters' listings of signatures and tensors (printed
    on stdout by Keras/TensorFlow) are kept off the command's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        fmt.write(model, path)


def _check_target(target: Path, fmt: Format) -> bool:
    """Refuse a target genrekit may not write; True when it holds a genrekit export of ``fmt``
    that may be replaced."""
    if target.is_dir() and not target.is_symlink() and not fmt.folder:
        raise UserError(f"--out {target} is a folder; --format {fmt.name} writes one file: "
                        f"give a file path (e.g. {target / fmt.file})")
    if target.is_symlink():
        raise UserError(f"--out {target} is a symbolic link; give a new path")
    if not target.exists():
        return False
    if fmt.recognise(target):
        return True
    if fmt.folder and target.is_dir() and not any(target.iterdir()):
        return False
    raise UserError(f"--out {target} exists and is not {fmt.what}; genrekit does not replace "
                    "what it did not write: choose a new --out")


def is_export_file(path: Path, fmt: str) -> bool:
    """Whether ``path`` is an export of ``fmt`` (what an earlier export wrote)."""
    return fmt in BY_NAME and BY_NAME[fmt].recognise(Path(path))


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Outputs of an exported model on ``x`` (used by the tests to check the round trip)."""
    x = np.asarray(x, dtype=np.float32)
    if fmt not in BY_NAME:
        raise UserError(f"unknown export format {fmt!r}")
    return BY_NAME[fmt].run(Path(path), x)


# -- the formats ---------------------------------------------------------------------------------

def _recogniser(test: Callable[[Path], bool]) -> Callable[[Path], bool]:
    """``test`` with anything unreadable answered False: what cannot be read is not an export."""
    def recognise(path: Path) -> bool:
        try:
            return bool(test(path))
        except Exception:  # noqa: BLE001 - anything unreadable is not an export
            return False
    return recognise


def _is_keras_file(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return {"config.json", "metadata.json"} <= set(z.namelist())


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / EXPORT_MARKER).is_file()


def _is_tflite_file(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8)[4:8] == b"TFL3"


def _is_onnx_file(path: Path) -> bool:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return m.ir_version > 0 and len(m.graph.node) > 0


def _write_keras(model, path: Path) -> None:
    model.save(path)


def _write_saved_model(model, path: Path) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


def _write_tflite(model, path: Path) -> None:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path.write_bytes(conv.convert())


def _write_onnx(model, path: Path) -> None:
    _normalization_reads_variables(model)
    # one sample; a free axis other than the batch (a track model's window count) gets 1
    zeros = [np.zeros((1, *(d or 1 for d in t.shape[1:])), dtype="float32") for t in model.inputs]
    model(zeros if len(zeros) > 1 else zeros[0])  # ONNX export needs a called model
    model.export(str(path), format="onnx", verbose=False)


def _normalization_reads_variables(model) -> None:
    """An adapted keras Normalization layer keeps its statistics as eager tensors, which the ONNX
    converter turns into extra graph *inputs*; point them at the layer's own variables (same
    values, broadcast the same way) so they become constants. Only the in-memory model changes."""
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.Normalization) or not hasattr(layer, "adapt_mean"):
            continue
        am, mean = layer.adapt_mean, getattr(layer, "mean", None)
        if mean is None or len(am.shape) > len(mean.shape):
            continue
        cut = len(mean.shape) - len(am.shape)
        lead, tail = tuple(mean.shape)[:cut], tuple(mean.shape)[cut:]
        if tail == tuple(am.shape) and all(d == 1 for d in lead):
            object.__setattr__(layer, "mean", am)
            object.__setattr__(layer, "variance", layer.adapt_variance)


def _run_keras(path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(load_model(path)(x))


def _run_saved_model(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return np.asarray(loaded.serve(tf.constant(x)))


# run_onnx and run_tflite are examples/predict_export.py's, statement for statement (that file
# runs without genrekit, so it cannot import them; tests/test_export_formats.py keeps them equal)

def run_tflite(model_path, x):
    """The outputs of a .tflite model on ``x``, with TensorFlow's TFLite interpreter."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(model_path))
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def run_onnx(model_path, x):
    """The outputs of a .onnx model on ``x``, with onnxruntime."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path))
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


TABLE: tuple[Format, ...] = (
    Format("keras", "model.keras", False, "a keras model file",
           _write_keras, _recogniser(_is_keras_file), _run_keras),
    Format("saved_model", "saved_model", True, "a genrekit SavedModel export",
           _write_saved_model, _recogniser(_is_saved_model), _run_saved_model),
    Format("tflite", "model.tflite", False, "a tflite model file",
           _write_tflite, _recogniser(_is_tflite_file), run_tflite),
    Format("onnx", "model.onnx", False, "a onnx model file",
           _write_onnx, _recogniser(_is_onnx_file), run_onnx, _need_tf2onnx),
)
BY_NAME = {f.name: f for f in TABLE}
FORMATS = tuple(BY_NAME)
# --out FILE ending in one of these: that format's model file alone
SUFFIX_FORMATS = {f.suffix: f.name for f in TABLE if not f.folder}
