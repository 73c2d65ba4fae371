"""Training throughput of ``genrekit train`` vs a minimal hand-written Keras script.

Same PNGs (gtzan_mini train split with time-stretch and pitch variants, 256x256), same
architecture, same batch size, same process. Prints training images/s (median epoch after a
warm-up epoch, training steps only: genrekit's per-epoch validation pass and best-model
checkpoint, which the minimal script does not do, are left out) for ``--arch cnn`` and ``--arch mobilenet`` (all layers trained), and the
ratio genrekit / hand-written (target >= 0.95: the toolkit adds no overhead).

    python benchmarks/bench_train.py [--epochs 3] [--archs cnn,mobilenet]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import epoch_timer, gtzan_features


def handwritten(feats: Path, arch: str, epochs: int, batch: int, timer) -> int:
    """What a user would write without genrekit."""
    import csv

    import keras
    import tensorflow as tf

    rows = [r for r in csv.DictReader(open(feats / "manifest.csv")) if r["split"] == "train" and r["feature"] == "mel"]
    genres = sorted({r["genre"] for r in rows})
    paths = [str(feats / r["path"]) for r in rows]
    labels = [genres.index(r["genre"]) for r in rows]

    def load(p, y):
        return tf.cast(tf.io.decode_png(tf.io.read_file(p), channels=1), tf.float32) / 255.0, y

    ds = (tf.data.Dataset.from_tensor_slices((paths, labels)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
          .cache().shuffle(len(paths), seed=0).batch(batch).prefetch(tf.data.AUTOTUNE))
    keras.utils.set_random_seed(0)
    inp = keras.Input((256, 256, 1))
    if arch == "cnn":
        x = keras.layers.Conv2D(32, 3, activation="relu")(inp)
        x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Dropout(0.35)(x)
        x = keras.layers.Conv2D(64, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
        x = keras.layers.Dropout(0.35)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(64, activation="relu")(x)
        x = keras.layers.Dropout(0.35)(x)
    else:
        x = keras.layers.Concatenate()([inp, inp, inp])
        x = keras.layers.Rescaling(2.0, -1.0)(x)
        x = keras.applications.MobileNet(input_shape=(256, 256, 3), include_top=False, weights=None)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(64, activation="relu")(x)
    out = keras.layers.Dense(len(genres), activation="softmax")(x)
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2)], jit_compile=False)
    model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0)
    return len(rows)


def with_genrekit(feats: Path, arch: str, epochs: int, batch: int, timer, out: Path) -> int:
    import json

    from genrekit.train import TrainOptions, train

    r = train(TrainOptions(data=str(feats), arch=arch, phase="scratch", weights="none", epochs=epochs,
                           patience=epochs, batch_size=batch, verbose=0, out=str(out), extra_callbacks=[timer]))
    return json.loads((Path(r.run) / "config.json").read_text())["data"]["train_rows"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", type=Path, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--archs", default="cnn,mobilenet")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        feats = a.features or gtzan_features(Path(tmp) / "feats")
        print(f"{'arch':10s} {'hand-written img/s':>19s} {'genrekit img/s':>15s} {'ratio':>6s}")
        for arch in a.archs.split(","):
            t_hand, t_gk = epoch_timer(training_only=True), epoch_timer(training_only=True)
            n = handwritten(feats, arch, a.epochs, a.batch_size, t_hand)
            with_genrekit(feats, arch, a.epochs, a.batch_size, t_gk, Path(tmp) / f"run-{arch}")
            hand = n / statistics.median(t_hand.times[1:])
            gk = n / statistics.median(t_gk.times[1:])
            print(f"{arch:10s} {hand:19.2f} {gk:15.2f} {gk / hand:6.2f}   ({n} images, target ratio >= 0.95)")


if __name__ == "__main__":
    main()
