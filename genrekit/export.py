"""``genrekit export``: a run's model as .keras, SavedModel, TFLite or ONNX."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from genrekit.errors import UserError
from genrekit.runs import Run

FORMATS = ("keras", "saved_model", "tflite", "onnx")


def export(run_path, fmt: str, out: str | None = None) -> Path:
    run = Run(run_path)
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    model = run.model()
    stem = run.path / "export"
    target = Path(out) if out else {
        "keras": stem / "model.keras", "saved_model": stem / "saved_model",
        "tflite": stem / "model.tflite", "onnx": stem / "model.onnx"}[fmt]
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "keras":
        model.save(target)
    elif fmt == "saved_model":
        if target.exists():
            shutil.rmtree(target)
        model.export(str(target), format="tf_saved_model", verbose=False)
    elif fmt == "tflite":
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        target.write_bytes(conv.convert())
    else:
        try:
            import tf2onnx  # noqa: F401
        except ImportError:
            raise UserError("ONNX export needs tf2onnx and onnx: pip install 'genrekit[export]' "
                            "(or pip install tf2onnx onnx)") from None
        _normalization_reads_variables(model)
        zeros = [np.zeros((1, *t.shape[1:]), dtype="float32") for t in model.inputs]
        model(zeros if len(zeros) > 1 else zeros[0])  # ONNX export needs a called model
        model.export(str(target), format="onnx", verbose=False)
    return target


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
        from genrekit.runs import load_model

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
