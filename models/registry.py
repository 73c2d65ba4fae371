"""The architecture registry: name -> builder, input feature kind and training phases."""
from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from genrekit.models.errors import ModelError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Callable
    feature: str  # "mel" (grayscale images), "mfcc" (sequences), "musicnn" / "melspec" (mel windows), "tempogram"
    phases: tuple[str, ...]  # ("scratch",) or ("transfer", "finetune")
    description: str
    default_weights: str | None = None  # for transfer architectures: "imagenet" or "msd"
    task: str = "genre"  # "genre" (classes) or "tempo" (BPM regression)
    head: str = "keras"  # "keras" (trained by fit) or "logreg" (track-level logistic regression, scikit-learn)

    @property
    def is_transfer(self) -> bool:
        return "transfer" in self.phases


def _lazy(module: str, fn: str, params: str | None = None) -> Callable:
    """A builder imported on first use. ``params``: the function (same module) whose keyword
    parameters the builder forwards ``**kw`` to, for hyper-parameter checks."""
    import importlib

    def build(*args, **kw):
        return getattr(importlib.import_module(module), fn)(*args, **kw)

    build.__name__ = fn
    build.params_function = lambda: getattr(importlib.import_module(module), params or fn)
    return build


DEFAULT_ARCH = "musicnn_lr"  # what `genrekit train` trains when no --arch is named (benchmarks/ood.py)

REGISTRY: dict[str, ArchSpec] = {s.name: s for s in [
    ArchSpec("fcnn", _lazy("genrekit.models.cnn", "build_fcnn"), "mfcc", ("scratch",),
             "flatten -> 512 -> 256 -> classes on MFCC sequences"),
    ArchSpec("cnn", _lazy("genrekit.models.cnn", "build_cnn"), "mel", ("scratch",),
             "custom CNN of the mel-spectrogram/MobileNet study"),
    ArchSpec("cnn_bn", _lazy("genrekit.models.cnn", "build_cnn_bn"), "mel", ("scratch",),
             "four 3x3 convs with BatchNorm"),
    ArchSpec("cnn64x400", _lazy("genrekit.models.cnn", "build_cnn64x400"), "melspec", ("scratch",),
             "compact CNN of the tempo study on 64x400 per-band-normalised dB mel windows"),
    ArchSpec("vgg16", _lazy("genrekit.models.transfer", "build_vgg16", "build_transfer"), "mel", ("transfer", "finetune"),
             "VGG16 ImageNet transfer learning", "imagenet"),
    ArchSpec("mobilenet", _lazy("genrekit.models.transfer", "build_mobilenet", "build_transfer"), "mel", ("transfer", "finetune"),
             "MobileNet v1 ImageNet transfer learning", "imagenet"),
    ArchSpec("mobilenetv2", _lazy("genrekit.models.transfer", "build_mobilenetv2", "build_transfer"), "mel", ("transfer", "finetune"),
             "MobileNet v2 ImageNet transfer learning", "imagenet"),
    ArchSpec("musicnn_lr", _lazy("genrekit.models.musicnn", "build_musicnn_track"), "musicnn", ("transfer",),
             "genrekit's default: frozen MSD musicnn on every window of a track, its 200-unit penultimate "
             "embedding summarised over the track (mean, std), logistic regression with its regularisation "
             "chosen by cross-validation", "msd", head="logreg"),
    ArchSpec("musicnn", _lazy("genrekit.models.musicnn", "build_musicnn", "build_musicnn_classifier"), "musicnn", ("transfer", "finetune"),
             "musicnn pretrained on the Million Song Dataset (or MagnaTagATune: --weights mtt)", "msd"),
    ArchSpec("musicnn_vgg", _lazy("genrekit.models.musicnn", "build_musicnn_vgg", "build_musicnn_classifier"), "musicnn", ("transfer", "finetune"),
             "musicnn's VGG baseline, pretrained on MSD (or MTT)", "msd"),
    ArchSpec("tempocnn", _lazy("genrekit.models.tempo", "build_tempocnn"), "tempogram", ("scratch",),
             "tempo regressor (BPM) on log-BPM tempogram windows (genrekit train --task tempo)", task="tempo"),
    ArchSpec("fusion", _lazy("genrekit.models.tempo", "build_fusion"), "genre run's", ("scratch",),
             "a genre run's frozen conv embedding + an MLP of a tempo run's predicted BPM "
             "(--genre-run RUN --tempo-run RUN)"),
    ArchSpec("lstm", _lazy("genrekit.models.rnn", "build_lstm"), "mfcc", ("scratch",),
             "two BiLSTM(128) layers on MFCC sequences"),
    ArchSpec("crnn", _lazy("genrekit.models.rnn", "build_crnn"), "mfcc", ("scratch",),
             "three conv blocks then two BiLSTM layers on MFCC sequences"),
]}


def get_arch(name: str) -> ArchSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r} (known: {', '.join(REGISTRY)})") from None


# parameters a builder takes that are not hyper-parameters a user sets
_NOT_HPARAMS = {"input_shape", "num_classes", "num_outputs", "arch", "variant", "genre_model"}
_UNIT_INTERVAL = {"dropout"}  # [0, 1)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_value(name: str, key: str, v, default) -> None:
    def bad(why):
        raise ModelError(f"{name}: bad hyper-parameter {key}={json.dumps(v) if _jsonable(v) else repr(v)}: {why}")

    if isinstance(default, bool):
        if not isinstance(v, bool):
            bad("expected true or false")
    elif isinstance(default, int):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            bad("expected a whole number of at least 1")
    elif isinstance(default, float):
        if not _is_number(v):
            bad("expected a finite number")
        if key in _UNIT_INTERVAL and not 0 <= v < 1:
            bad("expected a number in [0, 1)")
        if v < 0:
            bad("expected a number of at least 0")
    elif isinstance(default, tuple):
        if not isinstance(v, (list, tuple)) or not all(_is_number(x) for x in v):
            bad("expected a list of finite numbers, e.g. [32, 64]")
        if default and all(isinstance(x, int) for x in default):
            if not all(isinstance(x, int) and x >= 1 for x in v):
                bad("expected a list of whole numbers of at least 1, e.g. [32, 64]")
        if len(default) == 2 and key.endswith("range") and not (len(v) == 2 and v[0] < v[1]):
            bad("expected [low, high] with low < high")
    elif isinstance(default, str) or default is None:
        if v is not None and not isinstance(v, str):
            bad("expected a text value")
        if key == "name" and not (isinstance(v, str) and v.replace("_", "").replace("-", "").isalnum()):
            bad("expected a name of letters, digits, _ and -")


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def hparam_defaults(name: str) -> dict:
    """The hyper-parameters an architecture's builder takes, with their defaults."""
    spec = get_arch(name)
    fn = getattr(spec.builder, "params_function", lambda: spec.builder)()
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in _NOT_HPARAMS
            and p.default is not p.empty}


def check_hparams(name: str, hparams: dict) -> None:
    """Refuse unknown hyper-parameters and values of the wrong kind (a ModelError, one line)."""
    known = hparam_defaults(name)
    for key, v in hparams.items():
        if key not in known:
            raise ModelError(f"{name} has no hyper-parameter {key!r} (it takes: {', '.join(sorted(known)) or 'none'})")
        _check_value(name, key, v, known[key])


def build_model(name: str, input_shape, num_classes: int, **hparams):
    """Build through the registry: hyper-parameters are checked first, and a builder that still
    refuses them (a value Keras rejects, a model too deep for its input) says so in one line."""
    spec = get_arch(name)
    check_hparams(name, hparams)
    try:
        return spec.builder(input_shape, num_classes, **hparams)
    except ModelError:
        raise
    except (TypeError, ValueError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        shown = ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "default hyper-parameters"
        raise ModelError(f"{name}: cannot build with {shown} for input {tuple(input_shape)}: {first}") from None
