"""Keras 3 model builders for genrekit: one builder per architecture and a registry.

``build_x(input_shape, num_classes, **hparams) -> keras.Model``; see :mod:`genrekit.models.registry`.
This package never imports ``data_tools`` or ``genrekit``.
"""
from genrekit.models.errors import ModelError
from genrekit.models.registry import REGISTRY, ArchSpec, build_model, get_arch

__all__ = ["ModelError", "REGISTRY", "ArchSpec", "build_model", "get_arch"]
