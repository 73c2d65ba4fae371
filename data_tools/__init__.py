"""Data preparation for genrekit: finding and validating audio, track-level splits,
augmentation, feature rendering (mel PNG, MFCC), manifests and tf.data loaders.

This package never imports ``genrekit`` or ``models``.
"""
from genrekit.data_tools.errors import DataError

__all__ = ["DataError"]
