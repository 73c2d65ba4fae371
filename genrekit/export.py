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
from pathlib import Path

import numpy as np

from genrekit.data_tools.fsio import loads_json, write_json_atomic, write_text_atomic
from genrekit.errors import UserError
from genrekit.modelcard import MODEL_FILES, model_card, model_card_markdown
from genrekit.openset import OPENSET_FILE, load_distance_stats
from genrekit.runs import EXPORT_MARKER, Run, atomic_output, load_model

FORMATS = ("keras", "saved_model", "tflite", "onnx")
SUFFIX_FORMATS = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}  # --out FILE: the model file alone
BUNDLE_SIDE_FILES = ("labels.json", "feature_config.json", "calibration.json", "MODEL_CARD.md", "model_card.json")


def export(run_path, fmt: str, out: str | None = None) -> Path:
    """Write the run's model in ``fmt`` to ``out`` (default ``RUN/export/...``), complete-or-absent:
    it is built under a temporary name and renamed into place when complete, so a failed
    re-export leaves the previous export as it was. An existing ``out`` is replaced only when it
    is a genrekit export of the same format; anything else is refused, never deleted."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    run = Run(run_path)
    stem = run.path / "export"
    target = Path(out) if out else {
        "keras": stem / "model.keras", "saved_model": stem / "saved_model",
        "tflite": stem / "model.tflite", "onnx": stem / "model.onnx"}[fmt]
    if out is not None and fmt != "saved_model":
        replace, keep = _check_file_target(target, fmt, run)
    else:
        replace, keep = _check_target(target, fmt), []
    if fmt == "onnx":
        _need_tf2onnx()
    model = run.model()
    with atomic_output(target, folder=fmt == "saved_model", replace=replace) as work:
        _write(model, fmt, work)
        if fmt == "saved_model":
            write_json_atomic(work / EXPORT_MARKER, {"format": fmt, "run": str(run.path.resolve()),
                                                     "arch": run.arch, "labels": run.labels},
                              only_if_changed=False)
        elif out is not None:  # the record that lets a later export of this run replace it, and only that
            write_json_atomic(_record_path(target), {"format": fmt, "run": str(run.path.resolve()),
                                                     "sha256": keep + [_sha256(work)]}, only_if_changed=False)
    return target


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
    for folder in Path(os.path.abspath(target)).parents:
        if (folder / EXPORT_MARKER).is_file():
            what = "an export bundle"
        elif (folder / "config.json").is_file() and ((folder / "model.keras").exists()
                                                      or (folder / "labels.json").exists()):
            if own_run_ok and folder.resolve() == run.path.resolve():
                return
            what = "a run folder"
        else:
            continue
        raise UserError(f"--out {target} lies inside {what} ({folder}); genrekit does not write into a run's or "
                        "bundle's folder: give a path outside it")


def _check_file_target(target: Path, fmt: str, run: Run) -> tuple[bool, list[str]]:
    """A single-file export (``--out FILE.keras|.tflite|.onnx``) goes to a path that does not
    exist, or replaces an earlier single-file export of the same run recorded as such. Returns
    (replace, the checksums of that earlier export, kept in the new record)."""
    if target.is_symlink():
        raise UserError(f"--out {target} is a symbolic link; give a new path")
    if target.is_dir():
        raise UserError(f"--out {target} is a folder; --format {fmt} writes one file: give a file path "
                        f"(e.g. {target / ('model.' + fmt)})")
    _refuse_inside_owner(target, run, own_run_ok=False)
    rec = _record_path(target)
    if rec.is_symlink() or (rec.exists() and not rec.is_file()):
        raise UserError(f"{rec} (the record of a single-file export) is not a regular file; give a new --out")
    if not target.exists():
        if rec.exists() and not _is_record(rec):
            raise UserError(f"{rec} exists and genrekit did not write it; give a new --out")
        return False, []
    if not _recorded(target, run):
        raise UserError(f"--out {target} exists and is not an earlier single-file export of this run (no matching "
                        f"record {rec.name}); genrekit does not replace what it did not write: choose a new --out")
    if not target.stat().st_mode & stat.S_IWUSR:
        raise UserError(f"--out {target} is read-only; genrekit does not replace a file made read-only: "
                        "choose a new --out")
    return True, [_sha256(target)]


def _is_record(rec: Path) -> bool:
    try:
        doc = loads_json(rec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("run"), str) and isinstance(doc.get("sha256"), list)


def export_bundle(run_path, formats, out=None) -> Path:
    """Write the export bundle ``out`` (default ``RUN/export/``), a folder holding the model in
    each of ``formats`` (model.keras, saved_model/, model.tflite, model.onnx), ``labels.json``,
    ``feature_config.json``, ``calibration.json`` (the temperature), ``MODEL_CARD.md`` and
    ``model_card.json``. Complete-or-absent: the bundle is built under a temporary name and renamed
    into place, so a failed export leaves the previous bundle as it was. An existing ``out`` is
    replaced only when it is a genrekit bundle holding nothing else (or an empty folder, or a
    folder of earlier genrekit model exports); anything else is refused, never deleted."""

    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"unknown export format {', '.join(unknown) or repr('')} (known: {', '.join(FORMATS)})")
    run = Run(run_path)
    target = Path(out) if out else run.path / "export"
    _refuse_inside_owner(target, run, own_run_ok=True)
    replace = _check_bundle_target(target, run)
    if "onnx" in formats:
        _need_tf2onnx()
    model = run.model()
    calibration = dict(getattr(run, "calibration", None) or {})
    temperature = float(getattr(run, "temperature", 1.0))
    calibration["temperature"] = temperature
    card = model_card(run, formats, temperature, calibration)
    with atomic_output(target, folder=True, replace=replace) as work:
        for fmt in formats:
            _write(model, fmt, work / MODEL_FILES[fmt])
        write_json_atomic(work / "labels.json", list(run.labels), only_if_changed=False)
        write_json_atomic(work / "feature_config.json", run.feature_config.to_dict(), only_if_changed=False)
        write_json_atomic(work / "calibration.json", calibration, only_if_changed=False)
        write_json_atomic(work / "model_card.json", card, only_if_changed=False)
        write_text_atomic(work / "MODEL_CARD.md", model_card_markdown(card), only_if_changed=False)
        side = list(BUNDLE_SIDE_FILES)
        if calibration.get("reject_rule") == "embedding_distance":  # what --reject's distance rule needs
            load_distance_stats(run)  # a damaged file is refused, not shipped
            shutil.copyfile(run.path / OPENSET_FILE, work / OPENSET_FILE)
            side.append(OPENSET_FILE)
        files = sorted([MODEL_FILES[f] for f in formats] + side)
        write_json_atomic(work / EXPORT_MARKER, {"bundle": 1, "formats": formats, "files": files,
                                                 "run": str(run.path.resolve()), "arch": run.arch,
                                                 "labels": run.labels}, only_if_changed=False)
    return target


def _need_tf2onnx() -> None:
    try:
        import tf2onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs tf2onnx and onnx (and onnxruntime to run the export): from a genrekit "
                        "checkout pip install \".[export]\", or pip install tf2onnx onnx onnxruntime") from None


def _check_bundle_target(target: Path, run: Run) -> bool:
    """Refuse a bundle folder genrekit may not write; True when it holds an earlier genrekit
    export that may be replaced."""
    if target.is_symlink():
        raise UserError(f"--out {target} is a symbolic link; give a new path")
    if not target.exists():
        return False
    if not target.is_dir():
        raise UserError(f"--out {target} exists and is not a folder; an export bundle is a new folder (or give a "
                        f"path ending in {', '.join(SUFFIX_FORMATS)} to write the model file alone)")
    names = {p.name for p in target.iterdir()}
    if not names:
        return False
    mine = set()
    try:
        marker = loads_json((target / EXPORT_MARKER).read_text(encoding="utf-8"))
        if isinstance(marker, dict) and marker.get("bundle") == 1 and isinstance(marker.get("files"), list):
            mine = {f for f in marker["files"] if isinstance(f, str)} | {EXPORT_MARKER}
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    # model files genrekit exported one by one into the run's own RUN/export/ (before bundles), or
    # recorded as this run's single-file exports; a model file elsewhere may be the user's own
    legacy = {"model.keras": "keras", "model.tflite": "tflite", "model.onnx": "onnx"}
    own_dir = os.path.realpath(target) == os.path.realpath(run.path / "export")
    mine |= {n for n in names - mine if (n in legacy and ((own_dir and is_export_file(target / n, legacy[n]))
                                                          or _recorded(target / n, run)))
             or (own_dir and n == "saved_model" and (target / n / EXPORT_MARKER).is_file())}
    mine |= {n for n in names - mine if n.endswith(".genrekit-export.json") and n.startswith(".")
             and _recorded(target / n[1:-len(".genrekit-export.json")], run)}
    other = sorted(names - mine)
    if other:
        what = "holds files genrekit did not write" if EXPORT_MARKER in mine else "is not a genrekit export bundle"
        raise UserError(f"--out {target} exists and {what} (e.g. {other[0]}); genrekit does not replace what it "
                        "did not write: choose a new --out")
    return True


def _write(model, fmt: str, path: Path) -> None:
    """Write ``model`` as ``fmt``; the converters' listings of signatures and tensors (printed
    on stdout by Keras/TensorFlow) are kept off the command's output."""
    with contextlib.redirect_stdout(io.StringIO()):
        _write_model(model, fmt, path)


def _write_model(model, fmt: str, path: Path) -> None:
    if fmt == "keras":
        model.save(path)
    elif fmt == "saved_model":
        model.export(str(path), format="tf_saved_model", verbose=False)
    elif fmt == "tflite":
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        path.write_bytes(conv.convert())
    else:
        _normalization_reads_variables(model)
        # one sample; a free axis other than the batch (a track model's window count) gets 1
        zeros = [np.zeros((1, *(d or 1 for d in t.shape[1:])), dtype="float32") for t in model.inputs]
        model(zeros if len(zeros) > 1 else zeros[0])  # ONNX export needs a called model
        model.export(str(path), format="onnx", verbose=False)


def _check_target(target: Path, fmt: str) -> bool:
    """Refuse a target genrekit may not write; True when it holds a genrekit export of ``fmt``
    that may be replaced."""
    if target.is_dir() and not target.is_symlink() and fmt != "saved_model":
        raise UserError(f"--out {target} is a folder; --format {fmt} writes one file: give a file path "
                        f"(e.g. {target / ('model.' + fmt)})")
    if fmt == "keras" and target.suffix != ".keras":
        raise UserError(f"--out {target}: a Keras export is a file ending in .keras (e.g. {target}.keras)")
    if target.is_symlink():
        raise UserError(f"--out {target} is a symbolic link; give a new path")
    if not target.exists():
        return False
    if fmt == "saved_model":
        if target.is_dir() and (target / EXPORT_MARKER).is_file():
            return True
        if target.is_dir() and not any(target.iterdir()):
            return False
        raise UserError(f"--out {target} exists and is not a genrekit SavedModel export; genrekit does not "
                        "replace what it did not write: choose a new --out")
    if not is_export_file(target, fmt):
        raise UserError(f"--out {target} exists and is not a {fmt} model file; genrekit does not replace "
                        "what it did not write: choose a new --out")
    return True


def is_export_file(path: Path, fmt: str) -> bool:
    """Whether ``path`` is a model file of ``fmt`` (what an earlier export wrote)."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as z:
                return {"config.json", "metadata.json"} <= set(z.namelist())
        if fmt == "tflite":
            with open(path, "rb") as fh:
                return fh.read(8)[4:8] == b"TFL3"
        if fmt == "onnx":
            import onnx

            m = onnx.load(str(path), load_external_data=False)
            return m.ir_version > 0 and len(m.graph.node) > 0
    except Exception:  # noqa: BLE001 - anything unreadable is not an export
        return False
    return False


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
        lead, tail = tuple(mean.shape)[:len(mean.shape) - len(am.shape)], tuple(mean.shape)[len(mean.shape) - len(am.shape):]
        if tail == tuple(am.shape) and all(d == 1 for d in lead):
            object.__setattr__(layer, "mean", am)
            object.__setattr__(layer, "variance", layer.adapt_variance)


def run_exported(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Outputs of an exported model on ``x`` (used by the tests to check the round trip)."""
    x = np.asarray(x, dtype=np.float32)
    if fmt == "keras":
        return np.asarray(load_model(path)(x))
    if fmt == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return np.asarray(loaded.serve(tf.constant(x)))
    if fmt == "tflite":
        import tensorflow as tf

        interp = tf.lite.Interpreter(model_path=str(path))
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], x.shape)
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path))
        return sess.run(None, {sess.get_inputs()[0].name: x})[0]
    raise UserError(f"unknown export format {fmt!r}")
