"""Loading manifest rows as arrays and tf.data pipelines.

Image rows (PNG) are decoded inside the pipeline (decode -> cache -> shuffle -> batch ->
prefetch) by the same reader as :func:`load_feature` and prediction: the kind's own
(``genrekit.data_tools.features``: 8-bit grayscale -> float32 (H, W, 1) in [0, 1]), so one
decoder serves every path. Array rows (``.npy``) are small and read into memory.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.features import get_kind


def select(rows: list[dict], kind: str, splits: tuple[str, ...]) -> list[dict]:
    """The rows of feature ``kind`` in ``splits`` (a row with no ``feature``: mel for a PNG,
    else mfcc).

    >>> rows = [{"path": "mel/a.png", "split": "train"}, {"path": "mfcc/b.npy", "split": "train"}]
    >>> [r["path"] for r in select(rows, "mel", ("train",))]
    ['mel/a.png']"""
    return [r for r in rows if r.get("feature", "mel" if r["path"].endswith(".png") else "mfcc") == kind
            and r["split"] in splits]


def label_ids(rows: list[dict], labels: list[str]) -> np.ndarray:
    """The rows' genres as class ids (int32) in the order of ``labels``; one line naming any
    genre not among them.

    >>> label_ids([{"genre": "rock"}, {"genre": "jazz"}], ["jazz", "rock"]).tolist()
    [1, 0]"""
    index = {g: i for i, g in enumerate(labels)}
    unknown = sorted({r["genre"] for r in rows} - set(index))
    if unknown:
        raise DataError(f"genre(s) {', '.join(unknown)} are not among the model's labels "
                        f"({', '.join(labels)})")
    return np.array([index[r["genre"]] for r in rows], dtype=np.int32)


def load_feature(path: Path, kind: str) -> np.ndarray:
    """One feature file as model input, as its kind reads it: (H, W, 1) float32 in [0, 1] for
    an image kind, the stored float32 array otherwise."""
    feature_kind = get_kind(kind)
    try:
        return feature_kind.load(path)
    except FileNotFoundError:
        raise DataError(f"feature file missing: {path} (rerun `genrekit augment` to complete the folder)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable feature file {path}: {exc}") from None


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def check_png(path) -> None:
    """Raise :class:`DataError` naming ``path`` when it is not a complete PNG file (a truncated
    or overwritten feature file): its signature and its final IEND chunk are checked, cheaply,
    before TensorFlow decodes it inside a pipeline where the error could not name the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - len(PNG_END)))
            tail = fh.read()
    except OSError as exc:
        raise DataError(f"unreadable feature file {path}: {exc.strerror or exc}") from None
    if head != PNG_SIGNATURE:
        raise DataError(f"feature file {path} is not a PNG image (rerun `genrekit augment` to rewrite it)")
    if tail != PNG_END:
        raise DataError(f"feature file {path} is truncated (no PNG end chunk); rerun `genrekit augment` "
                        "to rewrite it")


def load_arrays(folder, rows: list[dict], kind: str) -> np.ndarray:
    """The rows' features as model inputs, stacked (an empty array for no rows)."""
    folder = Path(folder)
    if not rows:
        return np.zeros((0,), dtype=np.float32)
    return np.stack([load_feature(folder / r["path"], kind) for r in rows])


def make_dataset(folder, rows: list[dict], y: np.ndarray, kind: str, batch_size: int,
                 shuffle: bool, seed: int, cache: bool = True, weights=None):
    """tf.data pipeline over manifest rows: decode, cache, shuffle, batch, prefetch; elements
    (x, y), or (x, y, w) with ``weights`` (each row's sample weight, for Keras' fit)."""
    import tensorflow as tf

    folder = Path(folder)
    feature_kind = get_kind(kind)
    extra = () if weights is None else (np.asarray(weights, dtype=np.float32),)
    if feature_kind.image:  # image files, decoded inside the pipeline by the kind's own reader
        paths = [str(folder / r["path"]) for r in rows]
        missing = [p for p in paths if not Path(p).is_file()]
        if missing:
            raise DataError(f"{len(missing)} feature file(s) missing, e.g. {missing[0]}")
        for p in paths:
            check_png(p)
        ds = tf.data.Dataset.from_tensor_slices((paths, y) + extra)

        def read(p) -> np.ndarray:  # the one image decoder: the same function as load_feature
            return feature_kind.load(os.fsdecode(p))

        def decode(p, label, *w):
            x = tf.numpy_function(read, [p], tf.float32, stateful=False)
            x.set_shape((None, None, 1))  # (H, W, 1), as tf.io.decode_png(channels=1) gave
            return x, label, *w

        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        ds = tf.data.Dataset.from_tensor_slices((load_arrays(folder, rows, kind), y) + extra)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
