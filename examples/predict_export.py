"""Genre probabilities from a genrekit export bundle, without genrekit: numpy, librosa and
onnxruntime (model.onnx) or TensorFlow's TFLite interpreter (model.tflite). Gives the
probabilities of `genrekit predict` for runs on the musicnn and melspec feature kinds
(genrekit's default model, musicnn_lr, included) on files up to 10 minutes long.

    python predict_export.py BUNDLE_FOLDER song.wav [more.wav ...] [--tflite]
"""
import json
import sys
from pathlib import Path

import librosa
import numpy as np


def windows(path, cfg, kind):
    """The model inputs of one file: (windows, frames, bands), time first."""
    sr, hop_length = cfg["sr"], cfg["hop_length"]
    y, _ = librosa.load(path, sr=sr, mono=True, res_type="soxr_hq")
    if len(y) < sr:
        raise ValueError(f"{path}: shorter than 1 s")
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=cfg["n_fft"], hop_length=hop_length,
                                         n_mels=cfg["n_mels"], fmin=cfg["fmin"], fmax=cfg["fmax"])
    if kind == "musicnn":
        spec = np.log10(10000.0 * mel.astype(np.float32) + 1.0)
        n, hop = cfg["musicnn_frames"], cfg["musicnn_hop_frames"] or cfg["musicnn_frames"]
    elif kind == "melspec":
        spec = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=cfg["top_db"])
        n, hop = cfg["melspec_frames"], cfg["melspec_hop_frames"] or cfg["melspec_frames"]
    else:
        raise SystemExit(f"feature kind {kind!r} is not covered by this example: use genrekit predict")
    x = np.ascontiguousarray(spec.T, dtype=np.float32)
    if len(x) < n:  # shorter than one window: filled as in training
        x = np.pad(x, ((0, n - len(x)), (0, 0)), mode="wrap" if cfg["pad_mode"] == "wrap" else "constant")
    # windows whose audio peaks below -80 dBFS are silent and left out
    keep = [s for s in range(0, len(x) - n + 1, hop)
            if np.abs(y[s * hop_length:(s + n) * hop_length]).max(initial=0.0) >= 1e-4]
    if not keep:
        raise ValueError(f"{path}: silent")
    return np.stack([x[s:s + n] for s in keep])


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


RUNNERS = {".onnx": run_onnx, ".tflite": run_tflite}  # genrekit.export's formats of the same names


def run_model(model_path, x):
    """The exported model at ``model_path`` (``.onnx`` or ``.tflite``) applied to ``x``."""
    runner = RUNNERS.get(Path(model_path).suffix)
    if runner is None:
        raise SystemExit(f"{model_path}: not an .onnx or .tflite model")
    return runner(model_path, x)


def predict(bundle, path, model_file="model.onnx"):
    """Calibrated class probabilities of one audio file (labels.json order)."""
    bundle = Path(bundle)
    cfg = json.loads((bundle / "feature_config.json").read_text())
    spec = json.loads((bundle / "model_card.json").read_text())["input"]
    x = windows(path, cfg, spec["feature_kind"])
    if spec["track_model"]:  # the model takes all windows of the track and pools them
        p = run_model(bundle / model_file, x[None])[0]
    else:  # one answer per window, averaged
        p = run_model(bundle / model_file, x).mean(axis=0)
    t = json.loads((bundle / "calibration.json").read_text())["temperature"]
    with np.errstate(divide="ignore"):
        logp = np.log(p.astype(np.float64)) / t  # p ** (1 / T), renormalised
    p = np.exp(logp - logp.max())
    return p / p.sum()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tflite"]
    model_file = "model.tflite" if "--tflite" in sys.argv else "model.onnx"
    labels = json.loads((Path(args[0]) / "labels.json").read_text())
    for f in args[1:]:
        p = predict(args[0], f, model_file)
        top = np.argsort(-p)[:3]
        print(f, "  ".join(f"{labels[i]} {p[i]:.4f}" for i in top))
