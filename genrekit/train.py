"""The training loop behind ``genrekit train``.

manifest.csv (split column decides train/validation) -> tf.data -> model from the registry
-> fit with early stopping, checkpoints and CSV history -> a self-describing run folder.

The frozen-base transfer phase is cheap: when the base is frozen and no augmentation runs
on the fly, the base's outputs are computed once per image and only the head is trained
on them; the head's layers are the full model's own, so the full model is then saved.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.fsio import write_json_atomic
from genrekit.data_tools.loaders import label_ids, load_arrays, make_dataset, select
from genrekit.data_tools.manifest import check_no_leak, manifest_checksum, read_manifest
from genrekit.errors import UserError
from genrekit.runs import HISTORY, LABELS, MODEL, TMP_PREFIX, Run, library_versions, run_folder

PHASE_DEFAULTS = {  # epochs, learning rate
    "scratch": (30, 1e-3),
    "transfer": (12, 1e-3),
    "finetune": (10, 1e-4),
}


@dataclass
class TrainOptions:
    data: str
    arch: str
    phase: str | None = None
    out: str | None = None
    from_run: str | None = None
    epochs: int | None = None
    batch_size: int = 32
    lr: float | None = None
    optimizer: str = "adam"
    seed: int = 0
    weights: str | None = None  # None: the architecture's default (imagenet, or msd for musicnn)
    patience: int = 10
    hparams: dict = field(default_factory=dict)
    cache_base: bool = True
    mixed_precision: bool = False
    xla: bool | None = None  # None: on with a GPU, off on CPU
    strategy: str = "default"  # default | mirrored | multiworker
    deterministic: bool = False
    verbose: int = 2
    extra_callbacks: list = field(default_factory=list)  # API only: more keras callbacks
    synthetic: str | None = None  # a `genrekit gan generate` folder mixed into training only
    label_smoothing: float = 0.0  # targets (1 - e) one-hot + e / classes
    mixup: float = 0.0  # mixup alpha (Zhang et al., ICLR 2018): train on convex mixes of pairs; 0 = off
    image_aug: tuple[str, ...] = ()  # on-the-fly image augmentation: crop, affine, erase (image models)
    task: str = "genre"  # genre | tempo (BPM regression on tempogram windows, arch tempocnn)
    tempo_file: str | None = None  # track_id,bpm CSV for --task tempo (None: GTZAN's tempi, shipped)
    genre_run: str | None = None  # --arch fusion: the genre classifier whose embedding is reused
    tempo_run: str | None = None  # --arch fusion: the tempo regressor whose predictions are fed in


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _resolve_phase(spec, opts: TrainOptions) -> str:
    phase = opts.phase or ("transfer" if spec.is_transfer else "scratch")
    if phase not in PHASE_DEFAULTS:
        raise UserError(f"unknown phase {phase!r} (scratch, transfer or finetune)")
    if phase in ("transfer", "finetune") and not spec.is_transfer:
        raise UserError(f"{spec.name} has no pretrained base: use --phase scratch "
                        "(transfer/finetune are for vgg16, mobilenet, mobilenetv2)")
    if phase == "finetune" and not opts.from_run:
        raise UserError("--phase finetune needs --from RUN, a transfer run of the same architecture")
    if phase != "finetune" and opts.from_run:
        raise UserError("--from is only for --phase finetune")
    if spec.head == "logreg":
        if phase != "transfer":
            raise UserError(f"{spec.name} fits a logistic regression on a frozen backbone: it has only the "
                            "transfer phase (to fine-tune musicnn, train --arch musicnn)")
        if opts.label_smoothing or opts.mixup or opts.image_aug:
            raise UserError(f"{spec.name} fits a logistic regression: --label-smoothing, --mixup and --image-aug "
                            "are for the Keras-trained architectures")
    return phase


def _strategy(name: str):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                            "describing the cluster (see tf.distribute.MultiWorkerMirroredStrategy)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"unknown strategy {name!r} (default, mirrored or multiworker)")


def make_optimizer(name: str, lr: float):
    import keras

    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(lr)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9)
    raise UserError(f"unknown optimizer {name!r} (adam, rmsprop or sgd)")


def _soft_targets(opts: TrainOptions) -> bool:
    """Label smoothing and mixup need one-hot (soft) targets; otherwise labels stay sparse."""
    return opts.label_smoothing > 0 or opts.mixup > 0


def compile_classifier(model, opts: TrainOptions, lr: float, jit) -> None:
    import keras

    if _soft_targets(opts):
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=opts.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                   keras.metrics.TopKCategoricalAccuracy(k=2, name="top2")]
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                   keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")]
    model.compile(optimizer=make_optimizer(opts.optimizer, lr), loss=loss, metrics=metrics, jit_compile=jit)


def _prepare(ds, opts: TrainOptions, n_classes: int, train: bool):
    """One-hot targets when needed, and mixup on training batches."""
    import tensorflow as tf

    if not _soft_targets(opts):
        return ds

    def onehot(x, y):
        return x, tf.one_hot(tf.cast(y, tf.int32), n_classes)

    ds = ds.map(onehot)
    if train and opts.mixup > 0:
        alpha = float(opts.mixup)

        def mix(x, y):
            n = tf.shape(x)[0]
            g1 = tf.random.gamma([n], alpha)
            g2 = tf.random.gamma([n], alpha)
            lam = g1 / (g1 + g2)
            order = tf.random.shuffle(tf.range(n))
            lx = tf.reshape(lam, tf.concat([[n], tf.ones(tf.rank(x) - 1, tf.int32)], 0))
            return (lx * x + (1 - lx) * tf.gather(x, order),
                    lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, order))

        ds = ds.map(mix)
    return ds


def best_model_checkpoint(full_model, path: Path, monitor: str = "val_loss", mode: str = "min"):
    """A callback that saves the *full* model whenever ``monitor`` improves (also when only the
    head is being fitted on cached base outputs)."""
    import keras

    sign = 1.0 if mode == "min" else -1.0

    class BestFullModel(keras.callbacks.Callback):
        best = np.inf

        def on_epoch_end(self, epoch, logs=None):
            v = (logs or {}).get(monitor)
            if v is not None and sign * v < self.best:
                self.best = sign * v
                save_model(full_model, path)

    return BestFullModel()


def save_model(model, path: Path) -> None:
    """Save a .keras file atomically (a temporary name, renamed when complete)."""
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


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


def train(opts: TrainOptions) -> dict:
    import keras
    import tensorflow as tf

    from genrekit.models import build_model, get_arch
    from genrekit.models.registry import check_hparams
    from genrekit.models.transfer import set_phase, split_at_base

    check_options(opts)
    spec = get_arch(opts.arch)
    check_hparams(spec.name, opts.hparams)
    if opts.task not in ("genre", "tempo"):
        raise UserError(f"unknown task {opts.task!r} (genre or tempo)")
    if opts.task == "tempo" or spec.task == "tempo":
        if opts.task != "tempo":
            raise UserError(f"{spec.name} regresses tempo: train it with --task tempo")
        from genrekit.tempo import train_tempo

        return train_tempo(opts)
    if spec.name == "fusion":
        from genrekit.fusion import train_fusion

        return train_fusion(opts)
    if opts.genre_run or opts.tempo_run:
        raise UserError("--genre-run and --tempo-run are for --arch fusion")
    phase = _resolve_phase(spec, opts)
    epochs_default, lr_default = PHASE_DEFAULTS[phase]
    epochs = opts.epochs if opts.epochs is not None else epochs_default
    lr = opts.lr if opts.lr is not None else lr_default

    data = Path(opts.data)
    fc = FeatureConfig.load(data)
    rows = read_manifest(data)
    check_no_leak(rows)
    kind = spec.feature
    if kind == "musicnn":
        from genrekit.data_tools.features import MUSICNN_FEATURES

        wrong = {k: v for k, v in MUSICNN_FEATURES.items() if getattr(fc, k) != v}
        if wrong:
            raise UserError(f"{spec.name} needs musicnn's input (16 kHz, n_fft 512, hop 256, 96 mels); {data} differs "
                            f"in {', '.join(wrong)} (render it with `genrekit augment --features musicnn`)")
    train_rows = select(rows, kind, ("train",))
    valid_rows = select(rows, kind, ("valid",))
    if not select(rows, kind, ("train", "valid", "test")):
        have = sorted({r.get("feature", "?") for r in rows})
        raise UserError(f"{spec.name} trains on {kind} features but {data} has only "
                        f"{', '.join(have) or 'no'} features (rerun augment with --features {kind})")
    if not train_rows:
        raise UserError(f"no training rows of {kind} features in {data}")
    if not valid_rows and spec.head != "logreg":
        raise UserError(f"no validation rows in {data}: early stopping needs a valid split")
    if opts.image_aug and kind != "mel":
        raise UserError(f"--image-aug is for the image models; {spec.name} trains on {kind} features")
    augmenter = None
    if opts.image_aug:
        from genrekit.models.image_aug import image_augmenter

        augmenter = image_augmenter(tuple(opts.image_aug), seed=opts.seed)
    n_synthetic = 0
    if opts.synthetic:
        if kind != "mfcc":
            raise UserError(f"--synthetic adds MFCC sequences; {spec.name} trains on {kind} images")
        from genrekit.gan import synthetic_rows

        synth = synthetic_rows(opts.synthetic, fc)
        unknown = sorted({r["genre"] for r in synth} - {r["genre"] for r in rows})
        if unknown:
            raise UserError(f"--synthetic has genre(s) {', '.join(unknown)} that the data lacks")
        train_rows = train_rows + synth  # training split only: never validation or test
        n_synthetic = len(synth)

    parent = None
    if phase == "finetune":
        parent = Run(opts.from_run)
        if parent.arch != spec.name:
            raise UserError(f"--from {opts.from_run} is a {parent.arch} run, not {spec.name}")
        if parent.config.get("phase") not in ("transfer", "finetune"):
            raise UserError(f"--from {opts.from_run} is a {parent.config.get('phase')} run; "
                            "fine-tuning starts from a transfer run")
        if parent.feature_config.fingerprint() != fc.fingerprint():
            raise UserError(f"{data} was made with another feature config than the run {opts.from_run}")
        labels = list(parent.labels)
    else:
        labels = sorted({r["genre"] for r in rows})
    if len(labels) < 2:
        raise UserError("need at least two genres to train a classifier")

    keras.utils.set_random_seed(opts.seed)
    if opts.deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    if opts.mixed_precision:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log("note: --mixed-precision ignored: no GPU")
    jit = opts.xla if opts.xla is not None else bool(gpus)

    with run_folder(opts.out, spec.name, phase) as (run_dir, final_dir):  # complete-or-absent
        y_tr, y_va = label_ids(train_rows, labels), label_ids(valid_rows, labels)
        input_shape = fc.feature_shape(kind) + ((1,) if kind == "mel" else ())
        strategy = _strategy(opts.strategy)
        with strategy.scope():
            if parent is not None:
                model = parent.model()
                set_phase(model, "finetune")
            else:
                hp = dict(opts.hparams)
                if spec.is_transfer:
                    hp.setdefault("weights", None if phase == "scratch" else (opts.weights or spec.default_weights))
                    hp.setdefault("bn_inference", phase != "scratch")
                model = build_model(spec.name, input_shape, len(labels), **hp)
                if spec.is_transfer and phase == "transfer" and spec.head == "keras":
                    set_phase(model, "transfer")  # scratch: every layer, BatchNorm included, learns
            norm = find_layer(model, "input_norm")
            if norm is not None and parent is None:
                norm.adapt(check_finite_features(load_arrays(data, train_rows, kind), train_rows, data))
            compile_classifier(model, opts, lr, jit)

        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.patience,
                                                   restore_best_weights=True),
                     keras.callbacks.CSVLogger(str(run_dir / HISTORY)),
                     (checkpoint := best_model_checkpoint(model, run_dir / "checkpoint.keras")), stop_on_non_finite_loss(),
                     *opts.extra_callbacks]
        t0 = time.perf_counter()
        # the frozen base's outputs can be computed once only when nothing changes the images on the fly
        cached = (phase == "transfer" and opts.cache_base and opts.strategy == "default" and augmenter is None
                  and spec.head == "keras")
        head_fit = None
        if spec.head == "logreg":  # track-level logistic regression, fitted by scikit-learn (no epochs)
            from genrekit.trackhead import fit_track_head

            head_fit = fit_track_head(model, data, train_rows, y_tr, len(labels), seed=opts.seed,
                                      variants=bool(opts.hparams.get("variants", False)), log=log)
            t_base = 0.0
        elif cached:
            extractor, head = split_at_base(model)
            # one pass of the frozen base over train + valid (one trace, decoded images not kept)
            ds_all = make_dataset(data, train_rows + valid_rows, np.concatenate([y_tr, y_va]), kind,
                                  opts.batch_size, shuffle=False, seed=opts.seed, cache=False)
            log(f"computing frozen {spec.name} base outputs once for {len(train_rows)} + {len(valid_rows)} inputs")
            f_all = extractor.predict(ds_all.map(_features_only), verbose=0)
            f_tr, f_va = f_all[:len(train_rows)], f_all[len(train_rows):]
            t_base = time.perf_counter() - t0
            # the head trains on the cached arrays through one tf.data pipeline (shuffled per
            # epoch, prefetched, the validation batches cached), not Keras' per-epoch array adapter
            compile_classifier(head, opts, lr, jit)
            fds_tr = tf.data.Dataset.from_tensor_slices((f_tr, y_tr)).shuffle(
                len(y_tr), seed=opts.seed, reshuffle_each_iteration=True)
            fds_tr = _prepare(fds_tr.batch(opts.batch_size), opts, len(labels), train=True).prefetch(2)
            fds_va = _prepare(tf.data.Dataset.from_tensor_slices((f_va, y_va)).batch(opts.batch_size), opts,
                              len(labels), train=False).cache()
            # no full-model checkpoint at every improving epoch: only the head changes in this phase,
            # EarlyStopping restores the best weights, and checkpoint.keras is model.keras (below)
            head.fit(fds_tr, validation_data=fds_va, epochs=epochs, verbose=opts.verbose, shuffle=False,
                     callbacks=[c for c in callbacks if c is not checkpoint])
        else:
            t_base = 0.0
            ds_tr = make_dataset(data, train_rows, y_tr, kind, opts.batch_size, shuffle=True, seed=opts.seed)
            if augmenter is not None:
                import tensorflow as tf

                def augment(x, y):  # decode_png leaves H and W unknown; the feature config knows them
                    return augmenter(tf.ensure_shape(x, (None, *input_shape))), y

                ds_tr = ds_tr.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            ds_tr = _prepare(ds_tr, opts, len(labels), train=True)
            ds_va = _prepare(make_dataset(data, valid_rows, y_va, kind, opts.batch_size, shuffle=False, seed=opts.seed),
                             opts, len(labels), train=False)
            model.fit(ds_tr, validation_data=ds_va, epochs=epochs, callbacks=callbacks, verbose=opts.verbose,
                      shuffle=False)  # the dataset shuffles itself
        seconds = time.perf_counter() - t0
        check_finite_model(model)
        save_model(model, run_dir / MODEL)
        if cached:  # the best full model, as the per-epoch checkpoint of the other paths holds it
            tmp = run_dir / f"{TMP_PREFIX}{os.getpid()}-checkpoint.keras"
            shutil.copyfile(run_dir / MODEL, tmp)
            os.replace(tmp, run_dir / "checkpoint.keras")
        write_json_atomic(run_dir / LABELS, labels, only_if_changed=False)
        fc.save(run_dir)
        config = {
            "arch": spec.name, "phase": phase, "feature_kind": kind, "task": "genre",
            "from_run": str(Path(opts.from_run).resolve()) if opts.from_run else None,
            "epochs": epochs if head_fit is None else None, "head": spec.head, "head_fit": head_fit,
            "batch_size": opts.batch_size, "learning_rate": lr if head_fit is None else None,
            "optimizer": opts.optimizer if head_fit is None else None,
            "patience": opts.patience, "seed": opts.seed,
            "weights": ((opts.weights or spec.default_weights) if spec.is_transfer and phase != "scratch" and parent is None
                        else (parent.config.get("weights") if parent else None)),
            "hparams": {k: v for k, v in opts.hparams.items()},
            "label_smoothing": opts.label_smoothing, "mixup": opts.mixup, "image_aug": list(opts.image_aug),
            "cached_base": cached, "mixed_precision": opts.mixed_precision and bool(gpus), "xla": bool(jit),
            "strategy": opts.strategy, "input_shape": list(input_shape), "parameters": int(model.count_params()),
            "feature_config": fc.to_dict(), "feature_fingerprint": fc.fingerprint(),
            "data": {"folder": str(data.resolve()), "manifest_sha256": manifest_checksum(data),
                     "train_tracks": sorted({r["track_id"] for r in train_rows if r["augmentation"] != "synthetic"}),
                     "valid_tracks": sorted({r["track_id"] for r in valid_rows}),
                     "train_rows": len(train_rows), "valid_rows": len(valid_rows),
                     "synthetic": str(Path(opts.synthetic).resolve()) if opts.synthetic else None,
                     "synthetic_rows": n_synthetic},
            "train_seconds": round(seconds, 2), "base_feature_seconds": round(t_base, 2),
            "versions": library_versions(), "genrekit_command": " ".join(sys.argv[1:]) or None,
        }
        from genrekit.runs import write_config

        write_config(run_dir, config)
        plot_curves(run_dir, f"{spec.name} {phase}")
        seen: dict = {}  # the valid split is predicted once, for calibration and for train_metrics

        def predict(rs):
            key = tuple(r["path"] for r in rs)
            if key not in seen:
                seen[key] = predict_rows(model, data, rs, kind, opts.batch_size)
            return seen[key]

        calibrate_run(run_dir, predict, rows, labels, kind)
        results = evaluate_splits(predict, rows, labels, kind)
        write_json_atomic(run_dir / "train_metrics.json", results, only_if_changed=False)
        n_epochs = epochs_run(run_dir)
    return {"run": str(final_dir), "phase": phase, "metrics": results, "seconds": seconds,
            "epochs_run": n_epochs}


REJECT_ACCEPT = 0.95  # the rejection threshold keeps this share of validation tracks accepted
MIN_CALIBRATION_TRACKS = 10  # fewer validation tracks leave T at 1 (a fit on 6 tracks gave T = 0.06)


def calibrate_run(run_dir: Path, predict, rows, labels, kind, accept: float = REJECT_ACCEPT) -> dict:
    """Fit the run's temperature and rejection threshold on its final model's validation
    predictions and write ``calibration.json``. Both work on *track-level* probabilities (the
    mean of a track's window probabilities: what ``predict`` prints): T minimises their NLL; the
    threshold on the top calibrated probability keeps ``accept`` of the validation tracks
    accepted. No valid split, fewer than ``MIN_CALIBRATION_TRACKS`` validation tracks, or a
    valid split without a single error (T has no finite optimum): T stays 1, and the file
    says why."""
    from genrekit.evaluation.calibration import (apply_temperature, choose_reject_threshold, expected_calibration_error,
                                        fit_temperature, nll)
    from genrekit.evaluation.metrics import aggregate_tracks
    from genrekit.runs import CALIBRATION

    sr = [r for r in select(rows, kind, ("valid",)) if r["augmentation"] == "original"]
    cal: dict = {"temperature": 1.0, "level": "track", "reject_threshold": None, "reject_accept": accept,
                 "reject_score": "top calibrated track probability", "valid_tracks": 0}
    if not sr:
        cal["note"] = "no validation split: temperature left at 1 and no rejection threshold"
    else:
        _, ty, tp = aggregate_tracks([r["track_id"] for r in sr], label_ids(sr, labels), predict(sr))
        cal["valid_tracks"] = int(len(ty))
        if len(ty) < MIN_CALIBRATION_TRACKS:
            cal["note"] = (f"only {len(ty)} validation tracks (fewer than {MIN_CALIBRATION_TRACKS}): too few to "
                           "fit a temperature, left at 1")
        elif (tp.argmax(axis=1) == ty).all():
            cal["note"] = ("every validation track is right: the NLL has no finite optimum, "
                           "temperature left at 1")
        else:
            cal["temperature"] = fit_temperature(tp, ty)
        after = apply_temperature(tp, cal["temperature"])
        cal["reject_threshold"] = choose_reject_threshold(after, accept)
        cal.update({"valid_ece_before": expected_calibration_error(tp, ty),
                    "valid_ece_after": expected_calibration_error(after, ty),
                    "valid_nll_before": nll(tp, ty), "valid_nll_after": nll(after, ty)})
    write_json_atomic(run_dir / CALIBRATION, cal, only_if_changed=False)
    log(f"calibration: temperature {cal['temperature']:.3g}"
        + (f", rejection threshold {cal['reject_threshold']:.3g} (keeps {accept:.0%} of "
           f"{cal['valid_tracks']} validation tracks)" if cal["reject_threshold"] is not None else "")
        + (f" ({cal['note']})" if "note" in cal else ""))
    return cal


def _features_only(x, y):
    return x


def find_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def epochs_run(run_dir: Path) -> int:
    from genrekit.data_tools.fsio import read_csv

    p = run_dir / HISTORY
    return len(read_csv(p)) if p.is_file() else 0


def plot_curves(run_dir: Path, title: str) -> None:
    from genrekit.data_tools.fsio import read_csv
    from genrekit.evaluation.plots import plot_history

    p = run_dir / HISTORY
    if p.is_file():
        rows = read_csv(p)
        if rows:
            plot_history(rows, run_dir / "curves.png", title=title)


def predict_rows(model, folder, rows: list[dict], kind: str, batch_size: int = 32) -> np.ndarray:
    from genrekit.models.track import is_track_model

    if is_track_model(model):  # one probability per track, repeated on each of its rows
        from genrekit.trackhead import predict_track_rows

        return predict_track_rows(model, folder, rows)
    y0 = np.zeros(len(rows), dtype=np.int32)
    ds = make_dataset(folder, rows, y0, kind, batch_size, shuffle=False, seed=0, cache=False)
    return model.predict(ds.map(_features_only), verbose=0)


def evaluate_splits(predict, rows, labels, kind) -> dict:
    """Top-1/top-2 at clip and track level on the valid and test splits (originals only);
    ``predict(rows) -> probabilities``."""
    from genrekit.evaluation.metrics import evaluate_predictions

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


def format_summary(result: dict) -> str:
    lines = [f"run: {result['run']} ({result['phase']}, {result['epochs_run']} epochs, "
             f"{result['seconds']:.1f} s)"]
    for split, lv in result["metrics"].items():
        if "mae" in lv["track"]:  # tempo regression
            c, t = lv["clip"], lv["track"]
            lines.append(f"{split:5s}  window MAE {c['mae']:.1f} BPM (n={c['n']})   track MAE {t['mae']:.1f} BPM  "
                         f"median {t['median_ae']:.1f}  acc1 {t['accuracy1']:.3f}  acc2 {t['accuracy2']:.3f} "
                         f"(n={t['n']})")
            continue
        c, t = lv["clip"], lv["track"]
        lines.append(f"{split:5s}  clip top-1 {c['top1']:.3f}  top-2 {c['top2']:.3f}  (n={c['n']})   "
                     f"track top-1 {t['top1']:.3f}  top-2 {t['top2']:.3f}  (n={t['n']})")
    return "\n".join(lines)


def parse_hparams(items: list[str] | None) -> dict:
    """``--hparam key=value`` (value parsed as JSON when it can be: 0.5, [32,64], true)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"bad --hparam {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


__all__ = ["TrainOptions", "train", "format_summary", "parse_hparams"]
