"""The architecture registry: name -> builder, input feature kind and training phases."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from models.errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Callable
    feature: str  # "mel" (grayscale images), "mfcc" (sequences), "musicnn" / "melspec" (mel windows), "tempogram"
    phases: tuple[str, ...]  # ("scratch",) or ("transfer", "finetune")
    description: str
    default_weights: str | None = None  # for transfer architectures: "imagenet" or "msd"
    task: str = "genre"  # "genre" (classes) or "tempo" (BPM regression)

    @property
    def is_transfer(self) -> bool:
        return "transfer" in self.phases


def _lazy(module: str, fn: str) -> Callable:
    def build(*args, **kw):
        import importlib

        return getattr(importlib.import_module(module), fn)(*args, **kw)

    build.__name__ = fn
    return build


REGISTRY: dict[str, ArchSpec] = {s.name: s for s in [
    ArchSpec("fcnn", _lazy("models.cnn", "build_fcnn"), "mfcc", ("scratch",),
             "flatten -> 512 -> 256 -> classes on MFCC sequences"),
    ArchSpec("cnn", _lazy("models.cnn", "build_cnn"), "mel", ("scratch",),
             "custom CNN of the mel-spectrogram/MobileNet study"),
    ArchSpec("cnn_bn", _lazy("models.cnn", "build_cnn_bn"), "mel", ("scratch",),
             "four 3x3 convs with BatchNorm"),
    ArchSpec("cnn64x400", _lazy("models.cnn", "build_cnn64x400"), "melspec", ("scratch",),
             "compact CNN of the tempo study on 64x400 per-band-normalised dB mel windows"),
    ArchSpec("vgg16", _lazy("models.transfer", "build_vgg16"), "mel", ("transfer", "finetune"),
             "VGG16 ImageNet transfer learning", "imagenet"),
    ArchSpec("mobilenet", _lazy("models.transfer", "build_mobilenet"), "mel", ("transfer", "finetune"),
             "MobileNet v1 ImageNet transfer learning", "imagenet"),
    ArchSpec("mobilenetv2", _lazy("models.transfer", "build_mobilenetv2"), "mel", ("transfer", "finetune"),
             "MobileNet v2 ImageNet transfer learning", "imagenet"),
    ArchSpec("musicnn", _lazy("models.musicnn", "build_musicnn"), "musicnn", ("transfer", "finetune"),
             "musicnn pretrained on the Million Song Dataset (or MagnaTagATune: --weights mtt)", "msd"),
    ArchSpec("musicnn_vgg", _lazy("models.musicnn", "build_musicnn_vgg"), "musicnn", ("transfer", "finetune"),
             "musicnn's VGG baseline, pretrained on MSD (or MTT)", "msd"),
    ArchSpec("tempocnn", _lazy("models.tempo", "build_tempocnn"), "tempogram", ("scratch",),
             "tempo regressor (BPM) on log-BPM tempogram windows (genrekit train --task tempo)", task="tempo"),
    ArchSpec("fusion", _lazy("models.tempo", "build_fusion"), "genre run's", ("scratch",),
             "a genre run's frozen conv embedding + an MLP of a tempo run's predicted BPM "
             "(--genre-run RUN --tempo-run RUN)"),
    ArchSpec("lstm", _lazy("models.rnn", "build_lstm"), "mfcc", ("scratch",),
             "two BiLSTM(128) layers on MFCC sequences"),
    ArchSpec("crnn", _lazy("models.rnn", "build_crnn"), "mfcc", ("scratch",),
             "three conv blocks then two BiLSTM layers on MFCC sequences"),
]}


def get_arch(name: str) -> ArchSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r} (known: {', '.join(REGISTRY)})") from None


def build_model(name: str, input_shape, num_classes: int, **hparams):
    spec = get_arch(name)
    try:
        return spec.builder(input_shape, num_classes, **hparams)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ModelError(f"{name}: {exc}") from None
        raise
