"""The architecture registry: name -> builder, input feature kind, training phases and the named
layers genrekit relies on.

The builders are plain imported functions; their modules import Keras only inside the builders,
so importing this registry (``genrekit --help``, argument checks) does not load TensorFlow.
To add an architecture: write its builder in a module of this package and add one ``ArchSpec``
below (tests/test_registry.py then builds it and checks its declared layers)."""
from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from genrekit.models.cnn import build_cnn, build_cnn64x400, build_cnn_bn, build_fcnn
from genrekit.models.errors import ModelError
from genrekit.models.musicnn import (
    build_musicnn,
    build_musicnn_classifier,
    build_musicnn_track,
    build_musicnn_vgg,
)
from genrekit.models.rnn import build_crnn, build_lstm
from genrekit.models.tempo import build_fusion, build_tempocnn
from genrekit.models.transfer import (
    PREPROCESS,
    build_mobilenet,
    build_mobilenetv2,
    build_transfer,
    build_vgg16,
)


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its builder (``builder(input_shape, num_classes, **hparams) -> keras.Model``;
    fusion's takes the genre model in place of an input shape), the feature kind it reads and
    the named layers that training, prediction and embedding rely on (every builder's model has
    them: tests/test_registry.py builds each one and checks)."""

    name: str
    builder: Callable
    feature: str  # "mel" (grayscale images), "mfcc" (sequences), "musicnn" / "melspec" (mel windows), "tempogram"
    phases: tuple[str, ...]  # ("scratch",) or ("transfer", "finetune")
    description: str
    default_weights: str | None = None  # for transfer architectures: "imagenet" or "msd"
    task: str = "genre"  # "genre" (classes) or "tempo" (BPM regression)
    head: str = "keras"  # "keras" (trained by fit) or "logreg" (track-level logistic regression, scikit-learn)
    layers: tuple[str, ...] = ()  # named layers the model always has and genrekit uses (see the names below)
    hparams_of: Callable | None = None  # whose keyword parameters are the hyper-parameters (default: builder)
    # the task plug-in (genrekit.tasks.TASKS) that trains, predicts, evaluates and exports it
    plugin: str = "genre_windows"
    extra_kinds: tuple[str, ...] = ()  # feature kinds a run reads besides ``feature`` (fusion: tempograms)
    extra_inputs: tuple[tuple[int, ...], ...] = ()  # model inputs after the windows (fusion: the tempo)
    from_runs: bool = False  # trained from other runs (fusion), not from a feature folder of its own

    @property
    def is_transfer(self) -> bool:
        """Whether the architecture has a pretrained base (transfer and finetune phases)."""
        return "transfer" in self.phases


# The named layers genrekit relies on, declared per architecture in ``ArchSpec.layers``:
INPUT_NORM = "input_norm"  # a Normalization layer that training adapts on the training split
BASE = "base"  # the pretrained backbone: frozen for transfer, unfrozen for finetune
HEAD_FLATTEN = "head_flatten"  # first head layer: its input is the cached base output (transfer)
HEAD_DENSE = "head_dense"  # the transfer head's hidden layer
PREDICTIONS = "predictions"  # the softmax; its input is a run's embedding (genrekit embed)
TRACK_POOLING = "track_pooling"  # a track model's pooling of its windows' embeddings (logreg head)
FUSION_PREDICTIONS = "fusion_predictions"  # the fusion model's softmax

DEFAULT_ARCH = "musicnn_lr"  # what `genrekit train` trains when no --arch is named

_IMAGENET = (BASE, HEAD_FLATTEN, HEAD_DENSE, PREDICTIONS)

REGISTRY: dict[str, ArchSpec] = {s.name: s for s in [
    ArchSpec("fcnn", build_fcnn, "mfcc", ("scratch",),
             "flatten -> 512 -> 256 -> classes on MFCC sequences", layers=(INPUT_NORM, PREDICTIONS)),
    ArchSpec("cnn", build_cnn, "mel", ("scratch",),
             "custom CNN of the mel-spectrogram/MobileNet study", layers=(PREDICTIONS,)),
    ArchSpec("cnn_bn", build_cnn_bn, "mel", ("scratch",),
             "four 3x3 convs with BatchNorm", layers=(PREDICTIONS,)),
    ArchSpec("cnn64x400", build_cnn64x400, "melspec", ("scratch",),
             "compact CNN of the tempo study on 64x400 per-band-normalised dB mel windows",
             layers=(INPUT_NORM, PREDICTIONS)),
    ArchSpec("vgg16", build_vgg16, "mel", ("transfer", "finetune"),
             "VGG16 ImageNet transfer learning", "imagenet", layers=_IMAGENET, hparams_of=build_transfer),
    ArchSpec("mobilenet", build_mobilenet, "mel", ("transfer", "finetune"),
             "MobileNet v1 ImageNet transfer learning", "imagenet", layers=_IMAGENET,
             hparams_of=build_transfer),
    ArchSpec("mobilenetv2", build_mobilenetv2, "mel", ("transfer", "finetune"),
             "MobileNet v2 ImageNet transfer learning", "imagenet", layers=_IMAGENET,
             hparams_of=build_transfer),
    ArchSpec("musicnn_lr", build_musicnn_track, "musicnn", ("transfer",),
             "genrekit's default: frozen MSD musicnn on every window of a track, its 200-unit penultimate "
             "embedding summarised over the track (mean, std), logistic regression with its regularisation "
             "chosen by cross-validation", "msd", head="logreg", plugin="genre_track",
             layers=(BASE, TRACK_POOLING, PREDICTIONS)),
    ArchSpec("musicnn", build_musicnn, "musicnn", ("transfer", "finetune"),
             "musicnn pretrained on the Million Song Dataset (or MagnaTagATune: --weights mtt)", "msd",
             layers=(BASE, HEAD_FLATTEN, PREDICTIONS), hparams_of=build_musicnn_classifier),
    ArchSpec("musicnn_vgg", build_musicnn_vgg, "musicnn", ("transfer", "finetune"),
             "musicnn's VGG baseline, pretrained on MSD (or MTT)", "msd",
             layers=(BASE, HEAD_FLATTEN, PREDICTIONS), hparams_of=build_musicnn_classifier),
    ArchSpec("tempocnn", build_tempocnn, "tempogram", ("scratch",),
             "tempo regressor (BPM) on log-BPM tempogram windows (genrekit train --task tempo)", task="tempo",
             plugin="tempo"),
    ArchSpec("fusion", build_fusion, "genre run's", ("scratch",),
             "a genre run's frozen conv embedding + an MLP of a tempo run's predicted BPM "
             "(--genre-run RUN --tempo-run RUN)", layers=(FUSION_PREDICTIONS,), plugin="fusion",
             extra_kinds=("tempogram",), extra_inputs=((1,),), from_runs=True),
    ArchSpec("lstm", build_lstm, "mfcc", ("scratch",),
             "two BiLSTM(128) layers on MFCC sequences", layers=(INPUT_NORM, PREDICTIONS)),
    ArchSpec("crnn", build_crnn, "mfcc", ("scratch",),
             "three conv blocks then two BiLSTM layers on MFCC sequences", layers=(INPUT_NORM, PREDICTIONS)),
]}


def arch_names(task: str | None = None) -> list[str]:
    """Registered architectures (of one ``task``: "genre" or "tempo"), in registry order."""
    return [n for n, s in REGISTRY.items() if task is None or s.task == task]


DEFAULT_ARCHS = {"genre": DEFAULT_ARCH, "tempo": "tempocnn"}  # what `train --task T` trains without --arch


def task_names() -> list[str]:
    """What the registered architectures learn (``genrekit train --task``), in registry order."""
    return list(dict.fromkeys(s.task for s in REGISTRY.values()))


def default_arch(task: str = "genre") -> str:
    """The architecture ``genrekit train --task TASK`` trains when no ``--arch`` is named: the
    task's entry in ``DEFAULT_ARCHS``, else the first registered architecture of the task."""
    if task in DEFAULT_ARCHS:
        return DEFAULT_ARCHS[task]
    names = arch_names(task)
    if not names:
        raise ModelError(f"unknown task {task!r} ({' or '.join(task_names())})")
    return names[0]


def cv_arch_names() -> list[str]:
    """The architectures ``genrekit cv`` cross-validates: genre classifiers trained from features
    (not fusion, which is trained from two runs)."""
    return [n for n, s in REGISTRY.items() if s.task == "genre" and not s.from_runs]


def arch_help() -> str:
    """The architectures grouped by the features they read, for ``--help``:
    "musicnn features: musicnn_lr, musicnn, ...; mfcc features: ...; ..."."""
    groups: dict[str, list[str]] = {}
    on_runs = {s.feature for s in REGISTRY.values() if s.from_runs}
    for s in REGISTRY.values():
        groups.setdefault(s.feature, []).append(s.name + (f" (--task {s.task})" if s.task != "genre" else ""))
    return "; ".join(f"{', '.join(names)} (on a {kind} model)" if kind in on_runs else
                     f"{kind} features: {', '.join(names)}" for kind, names in groups.items())


def get_arch(name: str) -> ArchSpec:
    """The registered architecture ``name``; one line naming the known ones otherwise.

    >>> get_arch("cnn").feature
    'mel'"""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r} (known: {', '.join(REGISTRY)})") from None


# parameters a builder takes that are not hyper-parameters a user sets
_NOT_HPARAMS = {"input_shape", "num_classes", "num_outputs", "arch", "variant", "genre_model"}
_UNIT_INTERVAL = {"dropout"}  # [0, 1)
# text hyper-parameters with a closed set of values: anything else is refused here, before a
# builder treats it as its default (cnn_bn built "flatten" for pooling=x, issue 27)
_CHOICES = {"pooling": ("gap", "flatten"), "embedding": ("penultimate", "pooled", "taggram"),
            "preprocess": tuple(PREPROCESS)}


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
        if key in _CHOICES and v not in _CHOICES[key] and not (v is None and default is None):
            bad(f"choose from {', '.join(_CHOICES[key])}")


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def hparam_defaults(name: str) -> dict:
    """The hyper-parameters an architecture's builder takes, with their defaults."""
    spec = get_arch(name)
    fn = spec.hparams_of or spec.builder
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
    refuses them (a value Keras rejects, a model too deep for its input) says so in one line.
    ``input_shape``: the feature shape, without the batch axis; for ``fusion``, the trained genre
    model whose embedding it reuses."""
    spec = get_arch(name)
    check_hparams(name, hparams)
    try:
        return spec.builder(input_shape, num_classes, **hparams)
    except ModelError:
        raise
    except (TypeError, ValueError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        shown = ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "default hyper-parameters"
        what = "its genre model" if hasattr(input_shape, "layers") else f"input {tuple(input_shape)}"
        raise ModelError(f"{name}: cannot build with {shown} for {what}: {first}") from None
