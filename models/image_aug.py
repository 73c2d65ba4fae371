"""On-the-fly image augmentation for the image models (``genrekit train --image-aug``).

Keras preprocessing layers applied to training batches only (in the tf.data pipeline, so the
saved model carries none of them and inference sees the plain image), each seeded:

* ``crop``   — random crop of up to 15 % of each side, resized back (``RandomZoom`` zooming in);
* ``affine`` — random shift (5 % in frequency, 10 % in time) and a small rotation (±2 % of a
  turn), reflected at the borders;
* ``erase``  — random erasing (Zhong et al., AAAI 2020): with probability 0.5 a rectangle of
  2–15 % of the image is replaced by noise.
"""
from __future__ import annotations

from genrekit.models.errors import ModelError

IMAGE_AUGMENTATIONS = ("crop", "affine", "erase")


def image_augmenter(names, seed: int = 0):
    """A callable ``f(images) -> images`` for batches of (H, W, 1) images in [0, 1]."""
    import keras

    unknown = [n for n in names if n not in IMAGE_AUGMENTATIONS]
    if unknown:
        raise ModelError(f"unknown image augmentation(s) {', '.join(unknown)} "
                         f"(known: {', '.join(IMAGE_AUGMENTATIONS)})")
    layers = []
    for i, n in enumerate(names):
        s = seed + 101 * i
        if n == "crop":
            layers.append(keras.layers.RandomZoom((-0.15, 0.0), (-0.15, 0.0), fill_mode="reflect", seed=s))
        elif n == "affine":
            layers.append(keras.layers.RandomTranslation(0.05, 0.1, fill_mode="reflect", seed=s))
            layers.append(keras.layers.RandomRotation(0.02, fill_mode="reflect", seed=s + 1))
        else:
            layers.append(keras.layers.RandomErasing(factor=0.5, scale=(0.02, 0.15), value_range=(0.0, 1.0), seed=s))

    def apply(x):
        for layer in layers:
            x = layer(x, training=True)
        return x

    return apply
