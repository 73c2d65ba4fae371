"""The training skeleton shared by every task (``genrekit train``).

data -> model -> fit with callbacks -> save the run -> figures on the valid and test splits.
:func:`fit_task` does the steps every task shares — option checks, the run folder built
complete-or-absent, early stopping / CSV history / best-model checkpoint / stop on a
non-finite loss, the saved model, labels, feature config and ``config.json``, the training
curves and ``train_metrics.json`` — and asks a :class:`Task` plug-in for what differs: which
rows and targets it trains on (:meth:`Task.plan`), its model (:meth:`Task.build`), how it is
fitted (:meth:`Task.fit`), what more the run keeps (:meth:`Task.save`, :meth:`Task.config`) and
its figures (:meth:`Task.figures`). The plug-ins are the modules of ``genrekit.tasks`` (genre
window classifiers, the genre track model, tempo regression, tempo -> genre fusion), which
also say how their runs predict, evaluate and export; ``genrekit.tasks.task_for`` picks one. The GAN (``genrekit.gan``) trains two models against each other
and shares only the helpers below.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.fsio import atomic_path, loads_json, read_csv, write_json_atomic
from genrekit.data_tools.loaders import label_ids, select
from genrekit.data_tools.manifest import manifest_checksum
from genrekit.errors import UserError
from genrekit.evaluation.metrics import evaluate_predictions
from genrekit.evaluation.plots import plot_history
from genrekit.models import get_arch
from genrekit.models.registry import check_hparams, task_names
from genrekit.models.track import is_track_model
from genrekit.multidata import (
    AUTO,
    WEIGHT_RULE,
    check_weight_option,
    data_option,
    folders_of,
    weight_option,
)
from genrekit.options import names, option
from genrekit.runs import (
    HISTORY,
    LABELS,
    MODEL,
    TMP_PREFIX,
    library_versions,
    run_folder,
    write_config,
)

CHECKPOINT = "checkpoint.keras"  # the best model so far, while training only (removed once model.keras is saved)
PHASE_DEFAULTS = {  # a genre classifier's epochs and learning rate per phase
    "scratch": (30, 1e-3),
    "transfer": (12, 1e-3),
    "finetune": (10, 1e-4),
}


# -- the skeleton ----------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a task trains on, settled and checked before anything is written."""
    data: Path
    fc: FeatureConfig
    rows: list[dict]  # the whole manifest
    kind: str  # the feature kind the model reads
    labels: list[str]  # class names (["bpm"] for tempo regression)
    train_rows: list[dict]
    valid_rows: list[dict]
    phase: str  # scratch | transfer | finetune (config.json)
    tag: str  # the run's default folder name part and the summary's label (the phase, or "tempo")
    title: str  # the training curves' title
    epochs: int | None = None  # None: no epochs (a closed-form head)
    lr: float | None = None
    # several --data folders (genrekit.multidata): each one's record, and each track's sample
    # weight (None: every row weighs 1, as with one folder)
    collections: list = field(default_factory=list)
    track_weights: dict | None = None
    # a task carries what more it settles from plan to figures in a subclass of its own
    # (genre_windows.GenrePlan, tempo.TempoPlan, fusion.FusionPlan)


@dataclass
class TrainResult:
    """What :func:`fit_task` (``genrekit train``) made: the run folder and its figures."""
    run: str  # the run folder
    phase: str  # the plan's tag: the phase, or the task's own ("tempo")
    metrics: dict  # figures per split (train_metrics.json)
    seconds: float  # fitting time
    epochs_run: int
    fitted: str  # what was fitted, in words
    wall_seconds: float  # the whole command
    clips_are_tracks: bool = False  # a track model: its clip figures are its track figures


class Task:
    """A training task: its targets, its model and its figures. Subclasses override the steps."""

    name = "task"
    several_folders = False  # trains on several --data folders at once (genrekit.multidata)
    monitor: tuple[str, str] = ("val_loss", "min")  # early stopping and the best-model checkpoint

    def plan(self, opts: TrainOptions, spec) -> Plan:
        """The :class:`Plan`: options and data checked, rows, labels, epochs and learning rate
        settled. Every refusal happens here, before anything is written."""
        raise NotImplementedError

    def build(self, plan: Plan, opts: TrainOptions, spec):
        """The compiled model (inside the run folder's context: may load training arrays)."""
        raise NotImplementedError

    def callbacks(self, plan: Plan, opts: TrainOptions, model, run_dir: Path) -> list:
        """The fit's callbacks: early stopping on :attr:`monitor` (best weights restored),
        ``history.csv``, the best-model checkpoint, a stop on a non-finite loss, and
        ``opts.extra_callbacks``."""
        import keras

        monitor, mode = self.monitor
        return [keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=opts.patience,
                                              restore_best_weights=True),
                keras.callbacks.CSVLogger(str(run_dir / HISTORY)),
                best_model_checkpoint(model, run_dir / CHECKPOINT, monitor, mode),
                stop_on_non_finite_loss(), *opts.extra_callbacks]

    def fit(self, plan: Plan, opts: TrainOptions, model, callbacks: list) -> dict:
        """Fit ``model``; returns facts for config.json (:meth:`config` reads them)."""
        raise NotImplementedError

    def save(self, plan: Plan, opts: TrainOptions, model, run_dir: Path, info: dict) -> None:
        """Files the run keeps beside model.keras, labels.json and the feature config."""

    def config(self, plan: Plan, opts: TrainOptions, spec, model, info: dict) -> dict:
        """The task's entries of config.json (added to, or replacing, the shared ones;
        a ``data`` mapping is merged into the shared one)."""
        return {}

    def figures(self, plan: Plan, opts: TrainOptions, model, run_dir: Path) -> dict:
        """Figures per split (``train_metrics.json``), from the final model."""
        return {}

    def fitted(self, plan: Plan, spec, info: dict, epochs_run: int) -> str:
        """What was fitted, in words, for the summary's last line."""
        return f"{spec.name} {plan.tag}, {epochs_run} epoch{'' if epochs_run == 1 else 's'}"


def shared_config(spec, plan: Plan, opts: TrainOptions, model, seconds: float) -> dict:
    """The entries of config.json every task writes: architecture, phase, feature kind and
    config, training settings, the data (folder, manifest checksum, tracks, rows; each folder
    of several), versions."""
    config = {
        "arch": spec.name, "phase": plan.phase, "feature_kind": plan.kind, "task": spec.task,
        "epochs": plan.epochs, "batch_size": opts.batch_size, "learning_rate": plan.lr,
        "optimizer": opts.optimizer, "patience": opts.patience, "seed": opts.seed,
        "hparams": dict(opts.hparams), "parameters": int(model.count_params()),
        "feature_config": plan.fc.to_dict(), "feature_fingerprint": plan.fc.fingerprint(),
        "data": {"folder": str(plan.data.resolve()), "manifest_sha256": manifest_checksum(plan.data),
                 "train_tracks": sorted({r["track_id"] for r in plan.train_rows if r["augmentation"] != "synthetic"}),
                 "valid_tracks": sorted({r["track_id"] for r in plan.valid_rows}),
                 "train_rows": len(plan.train_rows), "valid_rows": len(plan.valid_rows)},
        "train_seconds": round(seconds, 2), "versions": library_versions(),
        "genrekit_command": " ".join(sys.argv[1:]) or None,
    }
    if plan.collections:  # several --data folders: config.json records each (one folder: nothing more)
        config["data"].update(collections_config(plan, opts))
    return config


def collections_config(plan: Plan, opts: TrainOptions) -> dict:
    """config.json's ``data`` entries of a run trained on several --data folders: each one's
    folder, manifest checksum, track-id prefix, training tracks, rows, genres and weight."""
    return {"collections": [c.record() for c in plan.collections],
            "collection_weight": WEIGHT_RULE if opts.collection_weight == AUTO
            else f"given by --collection-weight {opts.collection_weight:g}"}


def fit_task(task: Task, opts: TrainOptions) -> TrainResult:
    """Train ``opts.arch`` with ``task``; the run folder appears only when complete."""
    import keras

    t_start = time.perf_counter()
    check_options(opts)
    spec = get_arch(opts.arch)
    check_hparams(spec.name, opts.hparams)
    n_folders = len(folders_of(opts.data))
    if n_folders > 1 and not task.several_folders:
        raise UserError(f"{spec.name} trains on one feature folder; several --data folders ({n_folders}) are "
                        "for the genre classifiers")
    plan = task.plan(opts, spec)  # every refusal happens here, before anything is written
    keras.utils.set_random_seed(opts.seed)
    with run_folder(opts.out, spec.name, plan.tag) as (run_dir, final_dir):  # complete-or-absent
        model = task.build(plan, opts, spec)
        callbacks = task.callbacks(plan, opts, model, run_dir)
        t0 = time.perf_counter()
        info = task.fit(plan, opts, model, callbacks) or {}
        seconds = time.perf_counter() - t0
        check_finite_model(model)
        save_model(model, run_dir / MODEL)
        # the best-so-far checkpoint is the final model now (early stopping restored the best
        # weights): a duplicate of model.keras (189 MB for VGG16), so it goes
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
        task.save(plan, opts, model, run_dir, info)
        write_json_atomic(run_dir / LABELS, list(plan.labels), only_if_changed=False)
        plan.fc.save(run_dir)
        config = shared_config(spec, plan, opts, model, seconds)
        own = dict(task.config(plan, opts, spec, model, info))
        config["data"].update(own.pop("data", {}))
        config.update(own)
        write_config(run_dir, config)
        plot_curves(run_dir, plan.title)
        results = task.figures(plan, opts, model, run_dir)
        write_json_atomic(run_dir / "train_metrics.json", results, only_if_changed=False)
        n_epochs = epochs_run(run_dir)
        fitted = task.fitted(plan, spec, info, n_epochs)
    return TrainResult(run=str(final_dir), phase=plan.tag, metrics=results, seconds=seconds, epochs_run=n_epochs,
                       fitted=fitted, wall_seconds=time.perf_counter() - t_start,
                       clips_are_tracks=is_track_model(model))


# -- helpers every task uses ---------------------------------------------------------------------

@dataclass
class TrainOptions:
    """The options of one training run; those made with :func:`~genrekit.options.option` are
    also ``genrekit train``'s command-line options (and some of them ``genrekit cv``'s): their
    flag, help text, choices and default are these."""
    data: str | list[str] = option(  # several: genre classifiers only (genrekit.multidata)
        help="feature folder written by `genrekit augment`. train (genre classifiers) takes several, "
             "one per labelled collection: --data A --data B trains one run on all of them (tracks "
             "kept apart, later folders weighted: --collection-weight); cv takes one",
        action="append", metavar="FOLDER", convert=data_option)
    arch: str  # --arch is the command's own (train and cv offer different architectures)
    phase: str | None = option(
        None, "scratch | transfer | finetune (default: transfer for vgg16/mobilenet*, scratch "
              "otherwise)")
    out: str | None = option(None, "run folder (default runs/<arch>-<phase>-<time>)")
    from_run: str | None = option(
        None, "transfer run to fine-tune (--phase finetune)", flag="--from")
    epochs: int | None = option(
        None, "default " + ", ".join(f"{e} {ph}" for ph, (e, _) in PHASE_DEFAULTS.items())
              + " (tempo: 60, fusion: 30)", type=int)
    batch_size: int = option(32, "default %(default)s", type=int)
    lr: float | None = option(
        None, "default " + ", ".join(f"{lr:g} {ph}" for ph, (_, lr) in PHASE_DEFAULTS.items()),
        type=float)
    optimizer: str = option("adam", "adam | rmsprop | sgd (default %(default)s)")
    seed: int = option(0, "default %(default)s", type=int)
    weights: str | None = option(  # None: the architecture's default (imagenet, or msd for musicnn)
        None, "ImageNet models: imagenet (default; downloads as Keras does) | none | PATH to a "
              ".weights.h5 file. musicnn: msd (default) | mtt | none")
    patience: int = option(
        10, "early-stopping patience on val loss (default %(default)s)", type=int)
    hparams: dict = option(
        help="builder hyper-parameter, e.g. --hparam dropout=0.5 --hparam dense_units=128",
        flag="--hparam", action="append", metavar="KEY=VALUE",
        convert=lambda items: parse_hparams(items), default_factory=dict)
    cache_base: bool = option(
        True, "transfer phase: run the frozen base every epoch instead of once",
        flag="--no-cache-base")
    mixed_precision: bool = option(False, "float16 compute on a GPU")
    xla: bool | None = option(  # None: on with a GPU, off on CPU
        None, "XLA compilation (default: on with a GPU)", action=argparse.BooleanOptionalAction)
    strategy: str = option("default", "default | mirrored | multiworker (tf.distribute)")
    deterministic: bool = option(False, "TensorFlow op determinism (slower)")
    verbose: int = 2  # the command's --quiet: 0
    extra_callbacks: list = field(default_factory=list)  # API only: more keras callbacks
    synthetic: str | None = option(
        None, "a `genrekit gan generate` folder: its MFCC sequences join the training split only")
    label_smoothing: float = option(  # targets (1 - e) one-hot + e / classes
        0.0, "label smoothing e (default %(default)g)", type=float)
    mixup: float = option(  # mixup alpha (Zhang et al., ICLR 2018): convex mixes of pairs; 0 = off
        0.0, "mixup with Beta(ALPHA, ALPHA) mixing weights, e.g. 0.2 (default %(default)g: off)",
        type=float, metavar="ALPHA")
    image_aug: tuple[str, ...] = option(  # on-the-fly image augmentation (image models)
        (), "on-the-fly image augmentation for image models, training only: crop,affine,erase",
        type=names, metavar="LIST")
    task: str = option(  # genre | tempo (BPM regression on tempogram windows, arch tempocnn)
        "genre", "genre classification (default) or tempo regression in BPM on tempogram features",
        choices=tuple(task_names()))
    tempo_file: str | None = option(  # None: GTZAN's tempi, shipped
        None, "--task tempo: CSV track_id,bpm (default: GTZAN's ground-truth tempi, shipped)")
    collection_weight: float | str = option(
        AUTO, "several --data: weight of each track of the second and later folders against the "
              "first's: auto (default: the first's training tracks / that folder's, clipped to "
              "[1, 30]; 1 for a folder of one genre) or a number (1: every track alike)",
        type=weight_option, metavar="auto|W")
    genre_run: str | None = option(
        None, "--arch fusion: the genre run whose conv embedding is reused")
    tempo_run: str | None = option(
        None, "--arch fusion: the tempo run whose predictions are fed in")


def log(msg: str) -> None:
    """Print one line of training's progress to stderr."""
    print(msg, file=sys.stderr, flush=True)



def make_optimizer(name: str, lr: float):
    """The Keras optimiser ``name`` (adam, rmsprop, or sgd with momentum 0.9) at learning
    rate ``lr``."""
    import keras

    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9)
    raise UserError(f"unknown optimizer {name!r} (adam, rmsprop or sgd)")


def soft_targets(opts: TrainOptions) -> bool:
    """Label smoothing and mixup need one-hot (soft) targets; otherwise labels stay sparse."""
    return opts.label_smoothing > 0 or opts.mixup > 0


def compile_classifier(model, opts: TrainOptions, lr: float, jit) -> None:
    """Compile ``model`` with cross-entropy (categorical with ``opts.label_smoothing`` when
    :func:`soft_targets`, else sparse), accuracy and top-2 accuracy, and ``opts.optimizer`` at
    ``lr``; ``jit``: XLA."""
    import keras

    if soft_targets(opts):
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=opts.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.TopKCategoricalAccuracy(k=2, name="top2")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")]
    model.compile(optimizer=make_optimizer(opts.optimizer, lr), loss=loss, metrics=metrics, jit_compile=jit)



def prepare_targets(ds, opts: TrainOptions, n_classes: int, train: bool):
    """One-hot targets when needed, and mixup on training batches."""
    import tensorflow as tf

    if not soft_targets(opts):
        return ds

    def onehot(x, y, *w):  # w: the sample weights of several --data folders
        return x, tf.one_hot(tf.cast(y, tf.int32), n_classes), *w

    ds = ds.map(onehot)
    if train and opts.mixup > 0:
        alpha = float(opts.mixup)

        def mix(x, y, *w):
            n = tf.shape(x)[0]
            g1 = tf.random.gamma([n], alpha)
            g2 = tf.random.gamma([n], alpha)
            lam = g1 / (g1 + g2)
            order = tf.random.shuffle(tf.range(n))
            lx = tf.reshape(lam, tf.concat([[n], tf.ones(tf.rank(x) - 1, tf.int32)], 0))
            mixed_w = tuple(lam * v + (1 - lam) * tf.gather(v, order) for v in w)  # a pair weighs as mixed
            return (lx * x + (1 - lx) * tf.gather(x, order),
                    lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, order), *mixed_w)

        ds = ds.map(mix)
    return ds


def best_model_checkpoint(full_model, path: Path, monitor: str = "val_loss", mode: str = "min"):
    """A callback that saves the *full* model whenever ``monitor`` improves (also when only the
    head is being fitted on cached base outputs)."""
    import keras

    sign = 1.0 if mode == "min" else -1.0

    class BestFullModel(keras.callbacks.Callback):
        best = np.inf
        is_checkpoint = True  # a task that trains only part of the model may leave it out

        def on_epoch_end(self, epoch, logs=None):
            v = (logs or {}).get(monitor)
            if v is not None and sign * v < self.best:
                self.best = sign * v
                save_model(full_model, path)

    return BestFullModel()


def save_model(model, path: Path) -> None:
    """Save a .keras file atomically (a temporary name, renamed when complete)."""
    with atomic_path(path, path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")) as tmp:
        model.save(tmp)


def stop_on_non_finite_loss():
    """A callback that stops training with a one-line error as soon as a loss (training batch,
    or validation at an epoch's end) is NaN or infinite: a NaN model is never saved."""
    import keras

    def check(where, logs):
        for k, v in (logs or {}).items():
            if "loss" not in k:
                continue
            try:
                x = float(np.asarray(v))
            except (TypeError, ValueError):
                continue
            if not math.isfinite(x):
                raise UserError(f"training diverged: {k} became {x} {where} (non-finite features in the data, "
                                "or too high a --lr?); no run folder was written")

    class StopOnNonFiniteLoss(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            check(f"at epoch {self._epoch + 1}, batch {batch + 1}", logs)

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            check(f"at the end of epoch {epoch + 1}", logs)

        _epoch = 0

    return StopOnNonFiniteLoss()


def check_finite_features(x: np.ndarray, rows: list[dict], folder) -> np.ndarray:
    """Refuse feature arrays holding NaN or infinite values, naming the first bad file."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
        first = rows[int(bad[0])]["path"] if len(rows) == len(x) else "?"
        raise UserError(f"{len(bad)} feature file(s) of {folder} hold NaN or infinite values (first: {first}); "
                        "re-render them with `genrekit augment`")
    return x


def check_finite_model(model) -> None:
    """A model with a NaN or infinite weight (or normalisation statistic) is never saved."""
    for w in model.weights:
        v = np.asarray(w)
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise UserError(f"training produced non-finite values in {w.path} (non-finite features in the data, "
                            "or too high a --lr?); no run folder was written")


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_options(opts: TrainOptions) -> None:
    """Refuse bad numeric options before anything is read or created."""
    for flag, v in (("--epochs", opts.epochs), ("--batch-size", opts.batch_size)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise UserError(f"{flag} must be a whole number of at least 1, got {v!r}")
    if not isinstance(opts.patience, int) or isinstance(opts.patience, bool) or opts.patience < 0:
        raise UserError(f"--patience must be a whole number of at least 0, got {opts.patience!r}")
    if not isinstance(opts.seed, int) or isinstance(opts.seed, bool) or not 0 <= opts.seed < 2 ** 32:
        raise UserError(f"--seed must be a whole number in [0, 2**32), got {opts.seed!r}")
    if opts.lr is not None and not (_finite_number(opts.lr) and opts.lr > 0):
        raise UserError(f"--lr must be a finite number above 0, got {opts.lr!r}")
    if not (_finite_number(opts.label_smoothing) and 0 <= opts.label_smoothing < 1):
        raise UserError(f"--label-smoothing must be in [0, 1), got {opts.label_smoothing!r}")
    if not (_finite_number(opts.mixup) and opts.mixup >= 0):
        raise UserError(f"--mixup (alpha) must be a finite number of at least 0, got {opts.mixup!r}")
    check_hparam_values(opts.hparams)
    check_weight_option(opts.collection_weight)


def check_hparam_values(hparams: dict) -> None:
    """Every number in --hparam values must be finite (JSON accepts NaN and Infinity)."""
    def bad(v):
        if isinstance(v, float):
            return not math.isfinite(v)
        if isinstance(v, (list, tuple)):
            return any(bad(x) for x in v)
        if isinstance(v, dict):
            return any(bad(x) for x in v.values())
        return False

    if not isinstance(hparams, dict):
        raise UserError("hyper-parameters must be key=value pairs")
    for k, v in hparams.items():
        if bad(v):
            raise UserError(f"bad --hparam {k}={v!r}: numbers must be finite")



def _features_only(x, y):
    return x


def epochs_run(run_dir: Path) -> int:
    """Epochs recorded in the run's ``history.csv`` (0 without one)."""
    p = run_dir / HISTORY
    return len(read_csv(p)) if p.is_file() else 0


def plot_curves(run_dir: Path, title: str) -> None:
    """``curves.png`` of the run's ``history.csv``, titled ``title`` (none without history)."""
    p = run_dir / HISTORY
    if p.is_file():
        rows = read_csv(p)
        if rows:
            plot_history(rows, run_dir / "curves.png", title=title)


def evaluate_splits(predict, rows, labels, kind) -> dict:
    """Top-1/top-2 at clip and track level on the valid and test splits (originals only);
    ``predict(rows) -> probabilities``."""
    out = {}
    for split in ("valid", "test"):
        sr = [r for r in select(rows, kind, (split,)) if r["augmentation"] == "original"]
        if not sr:
            continue
        proba = predict(sr)
        res = evaluate_predictions([r["track_id"] for r in sr], label_ids(sr, labels), proba, labels)
        out[split] = {lvl: {k: res[lvl][k] for k in ("n", "top1", "top2", "loss", "f1_macro", "f1_micro")}
                      for lvl in ("clip", "track")}
    return out


def format_summary(result: TrainResult) -> str:
    """The figures per split, then one last line: the run folder, what was fitted and the wall
    time. A track model's clip figures are its track figures (each clip carries its track's
    probabilities): only the track figures are shown."""
    lines = []
    one_level = result.clips_are_tracks
    for split, lv in result.metrics.items():
        if "mae" in lv["track"]:  # tempo regression
            c, t = lv["clip"], lv["track"]
            lines.append(f"{split:5s}  window MAE {c['mae']:.1f} BPM (n={c['n']})   track MAE {t['mae']:.1f} BPM  "
                         f"median {t['median_ae']:.1f}  acc1 {t['accuracy1']:.3f}  acc2 {t['accuracy2']:.3f} "
                         f"(n={t['n']})")
            continue
        c, t = lv["clip"], lv["track"]
        clip = "" if one_level else f"clip top-1 {c['top1']:.3f}  top-2 {c['top2']:.3f}  (n={c['n']})   "
        lines.append(f"{split:5s}  {clip}track top-1 {t['top1']:.3f}  top-2 {t['top2']:.3f}  (n={t['n']})")
    fitted = result.fitted or f"{result.phase}, {result.epochs_run} epochs"
    lines.append(f"run: {result.run} ({fitted}; {result.wall_seconds:.1f} s wall time)")
    return "\n".join(lines)


def parse_hparams(items: list[str] | None) -> dict:
    """``--hparam key=value`` (value parsed as JSON when it can be: 0.5, [32,64], true)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"bad --hparam {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = loads_json(v)
        except ValueError:
            out[k.strip()] = v
    return out
