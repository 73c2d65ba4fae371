"""The genre window classifier task (and the genre tasks' shared code): classifiers trained on
a feature folder's genres (``genrekit train``); :mod:`genrekit.tasks.genre_track` is the track
model with a logistic-regression head.

Targets are the genres of the manifest's rows (the folder names); validation rows drive early
stopping. Three ways to fit, chosen by the architecture and phase:

- a track model with a logistic-regression head (the default ``musicnn_lr``): the frozen
  backbone embeds every window, the track statistics are fitted by scikit-learn
  (:mod:`genrekit.trackhead`) and folded into the model's softmax layer — no epochs;
- the frozen-base transfer phase: the base's outputs are computed once per image and only the
  head is trained on them (its layers are the full model's own, so the full model is saved);
- everything else: ``fit`` on a tf.data pipeline of the images or sequences.

Figures: top-1/top-2 at clip and track level on the valid and test splits, after the run's
temperature and rejection threshold are fitted on the valid split (``calibration.json``).
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import MUSICNN_FEATURES, get_kind
from genrekit.data_tools.fsio import write_json_atomic
from genrekit.data_tools.loaders import label_ids, load_arrays, make_dataset, select
from genrekit.errors import UserError
from genrekit.evaluation.calibration import (
    apply_temperature,
    choose_reject_threshold,
    choose_temperature,
    expected_calibration_error,
    nll,
)
from genrekit.evaluation.metrics import aggregate_tracks
from genrekit.gan import synthetic_rows
from genrekit.models import build_model
from genrekit.models.folding import fold_batchnorm
from genrekit.models.image_aug import image_augmenter
from genrekit.models.registry import INPUT_NORM, ArchSpec
from genrekit.models.track import is_track_model
from genrekit.models.transfer import set_phase, split_at_base
from genrekit.multidata import read_training_data, row_weights
from genrekit.openset import fit_open_set, per_genre_thresholds
from genrekit.prediction import Analysis, Block, predict_rows, track_analysis
from genrekit.runs import CALIBRATION, Run
from genrekit.tasks.base import TaskPlugin
from genrekit.trackhead import fit_track_head
from genrekit.training import (
    PHASE_DEFAULTS,
    Plan,
    TrainOptions,
    check_finite_features,
    compile_classifier,
    evaluate_splits,
    log,
    prepare_targets,
)

REJECT_ACCEPT = 0.95  # the rejection threshold keeps this share of validation tracks accepted
MIN_CALIBRATION_TRACKS = 10  # fewer validation tracks leave T at 1 (a T fitted on a handful is noise)


def resolve_phase(spec, opts: TrainOptions) -> str:
    """The training phase: ``--phase``, else transfer for an architecture with a pretrained
    base and scratch for the others; one line when the phase or ``--from`` does not fit."""
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


@dataclass
class GenrePlan(Plan):
    """A genre classifier's plan, completed by :meth:`GenreTask.build` and :meth:`GenreTask.fit`."""
    spec: ArchSpec | None = None
    augmenter: Callable | None = None  # on-the-fly image augmentation (--image-aug)
    n_synthetic: int = 0  # --synthetic rows added to the training split
    parent: Run | None = None  # --from RUN (fine-tuning)
    base_lr: float = 1e-3  # the optimiser's learning rate (``lr`` is None for a logistic-regression head)
    gpus: bool = False
    jit: bool = False  # XLA
    input_shape: tuple = ()
    y_tr: np.ndarray | None = None  # class ids of the training and validation rows
    y_va: np.ndarray | None = None
    head_fit: dict | None = None  # a logistic-regression head's fit (trackhead.fit_track_head)
    head_embeddings: tuple | None = None  # (embeddings, classes, track ids) it was fitted on


class GenreTask(TaskPlugin):
    """Targets: the manifest's genres; model: the architecture's classifier; figures: top-1/top-2
    at clip and track level. A run: class probabilities, calibrated and with a rejection rule."""

    name = "genre_windows"
    batchable = True
    several_folders = True  # train --data A --data B (genrekit.multidata)

    def plan(self, opts: TrainOptions, spec) -> GenrePlan:
        """Check the options and the feature folder; settle the rows (``--synthetic`` ones added
        to train), the labels (a ``--from`` run's own), the epochs and the learning rate."""
        if opts.genre_run or opts.tempo_run:
            raise UserError("--genre-run and --tempo-run are for --arch fusion")
        phase = resolve_phase(spec, opts)
        epochs_default, lr_default = PHASE_DEFAULTS[phase]
        logreg = spec.head == "logreg"
        td = read_training_data(opts.data, opts.collection_weight, spec.feature)  # one folder, or several joined
        data, fc, rows, where = td.folder, td.fc, td.rows, td.name
        kind = spec.feature
        if kind == "musicnn":
            wrong = {k: v for k, v in MUSICNN_FEATURES.items() if getattr(fc, k) != v}
            if wrong:
                raise UserError(f"{spec.name} needs musicnn's input (16 kHz, n_fft 512, hop 256, 96 mels); {where} "
                                f"differs in {', '.join(wrong)} (render it with `genrekit augment --features musicnn`)")
        train_rows = select(rows, kind, ("train",))
        valid_rows = select(rows, kind, ("valid",))
        if not select(rows, kind, ("train", "valid", "test")):
            have = sorted({r.get("feature", "?") for r in rows})
            raise UserError(f"{spec.name} trains on {kind} features but {where} {'have' if td.collections else 'has'} only "
                            f"{', '.join(have) or 'no'} features (rerun augment with --features {kind})")
        if not train_rows:
            raise UserError(f"no training rows of {kind} features in {where}")
        if not valid_rows and not logreg:
            raise UserError(f"no validation rows in {where}: early stopping needs a valid split")
        if opts.image_aug and not get_kind(kind).image:
            raise UserError(f"--image-aug is for the image models; {spec.name} trains on {kind} features")
        augmenter = None
        if opts.image_aug:
            augmenter = image_augmenter(tuple(opts.image_aug), seed=opts.seed)
        n_synthetic = 0
        if opts.synthetic:
            if kind != "mfcc":
                raise UserError(f"--synthetic adds MFCC sequences; {spec.name} trains on {kind} images")
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
                raise UserError(f"{where} was made with another feature config than the run {opts.from_run}")
            labels = list(parent.labels)
        else:
            labels = sorted({r["genre"] for r in rows})
        if len(labels) < 2:
            raise UserError("need at least two genres to train a classifier")
        for note in td.notes:
            log(f"note: {note}")
        return GenrePlan(data=data, fc=fc, rows=rows, kind=kind, labels=labels, train_rows=train_rows,
                    valid_rows=valid_rows, phase=phase, tag=phase, title=f"{spec.name} {phase}",
                    epochs=None if logreg else (opts.epochs if opts.epochs is not None else epochs_default),
                    lr=None if logreg else (opts.lr if opts.lr is not None else lr_default),
                    spec=spec, augmenter=augmenter, n_synthetic=n_synthetic, parent=parent,
                    base_lr=opts.lr if opts.lr is not None else lr_default,
                    collections=td.collections, track_weights=td.track_weights)

    def build(self, plan: GenrePlan, opts: TrainOptions, spec):
        """Set the device options (determinism, mixed precision, XLA) and build the model (the
        ``--from`` run's to fine-tune, else a new one), input normalisation adapted, compiled."""
        import keras
        import tensorflow as tf

        if opts.deterministic:
            tf.config.experimental.enable_op_determinism()
        gpus = tf.config.list_physical_devices("GPU")
        if opts.mixed_precision:
            if gpus:
                keras.mixed_precision.set_global_policy("mixed_float16")
            else:
                log("note: --mixed-precision ignored: no GPU")
        jit = opts.xla if opts.xla is not None else bool(gpus)
        kind, phase, parent = plan.kind, plan.phase, plan.parent
        input_shape = get_kind(kind).input_shape(plan.fc)
        plan.gpus, plan.jit, plan.input_shape = bool(gpus), jit, input_shape
        plan.y_tr, plan.y_va = label_ids(plan.train_rows, plan.labels), label_ids(plan.valid_rows, plan.labels)
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
                model = build_model(spec.name, input_shape, len(plan.labels), **hp)
                if spec.is_transfer and phase == "transfer" and spec.head == "keras":
                    set_phase(model, "transfer")  # scratch: every layer, BatchNorm included, learns
            norm = model.get_layer(INPUT_NORM) if INPUT_NORM in spec.layers else None
            if norm is not None and parent is None:
                norm.adapt(check_finite_features(load_arrays(plan.data, plan.train_rows, kind), plan.train_rows,
                                                 plan.data))
            compile_classifier(model, opts, plan.base_lr, jit)
        return model

    def fit(self, plan: GenrePlan, opts: TrainOptions, model, callbacks: list) -> dict:
        """Fit a logistic-regression head (scikit-learn), the head alone on the frozen base's
        outputs computed once (transfer), or the whole model on a tf.data pipeline; returns
        ``cached``, ``head_fit`` and ``t_base`` for config.json."""
        import tensorflow as tf

        spec, kind, labels = plan.spec, plan.kind, plan.labels
        y_tr, y_va = plan.y_tr, plan.y_va
        train_rows, valid_rows, data = plan.train_rows, plan.valid_rows, plan.data
        lr, jit = plan.base_lr, plan.jit
        t0 = time.perf_counter()
        # the frozen base's outputs can be computed once only when nothing changes the images on the fly
        cached = (plan.phase == "transfer" and opts.cache_base and opts.strategy == "default"
                  and plan.augmenter is None and spec.head == "keras")
        head_fit = None
        t_base = 0.0
        # several --data folders: each row's sample weight (None: all alike, as with one folder)
        w_tr, w_va = row_weights(plan.track_weights, train_rows), row_weights(plan.track_weights, valid_rows)
        if spec.head == "logreg":  # track-level logistic regression, fitted by scikit-learn (no epochs)
            head_fit, fitted = fit_track_head(model, data, train_rows, y_tr, len(labels), seed=opts.seed,
                                              variants=bool(opts.hparams.get("variants", False)), log=log,
                                              sample_weight=w_tr)
            if not head_fit["variants"]:  # one pooled embedding per training track: kept for the run
                plan.head_embeddings = fitted
        elif cached:
            extractor, head = split_at_base(model)
            # one pass of the frozen base over train + valid (decoded images not kept)
            all_rows = train_rows + valid_rows
            log(f"computing frozen {spec.name} base outputs once for {len(train_rows)} + {len(valid_rows)} inputs")
            f_all = base_outputs(extractor, feature_batches(data, all_rows, kind, opts.batch_size), len(all_rows), jit)
            n_tr = len(train_rows)
            t_base = time.perf_counter() - t0
            # the head trains on the cached arrays through one tf.data pipeline (shuffled per
            # epoch, prefetched, the validation batches cached), not Keras' per-epoch array adapter
            compile_classifier(head, opts, lr, jit)
            head.optimizer = fused_adam(head.optimizer)  # the same Adam, one kernel per update
            # the optimizer's slots made now, not inside the first trace of the train step (a
            # tf.function that creates variables is traced twice)
            head.optimizer.build(head.trainable_variables)
            fds_tr = cached_batches(f_all, np.arange(n_tr), y_tr, opts.batch_size, opts.seed, w_tr)
            fds_tr = prepare_targets(fds_tr, opts, len(labels), train=True).prefetch(2)
            f_va = tf.gather(f_all, np.arange(n_tr, len(all_rows)))
            va = (f_va, y_va) if w_va is None else (f_va, y_va, w_va)
            fds_va = prepare_targets(tf.data.Dataset.from_tensor_slices(va).batch(opts.batch_size), opts,
                                     len(labels), train=False).cache()
            # no full-model checkpoint at every improving epoch: only the head changes in this phase
            # and EarlyStopping restores the best weights (model.keras is the best full model)
            head.fit(fds_tr, validation_data=fds_va, epochs=plan.epochs, verbose=opts.verbose, shuffle=False,
                     callbacks=[c for c in callbacks if not getattr(c, "is_checkpoint", False)])
        else:
            augmenter, input_shape = plan.augmenter, plan.input_shape
            ds_tr = make_dataset(data, train_rows, y_tr, kind, opts.batch_size, shuffle=True, seed=opts.seed,
                                 weights=w_tr)
            if augmenter is not None:
                def augment(x, y, *w):  # decode_png leaves H and W unknown; the feature config knows them
                    return augmenter(tf.ensure_shape(x, (None, *input_shape))), y, *w

                ds_tr = ds_tr.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
            ds_tr = prepare_targets(ds_tr, opts, len(labels), train=True)
            ds_va = prepare_targets(make_dataset(data, valid_rows, y_va, kind, opts.batch_size, shuffle=False,
                                                 seed=opts.seed, weights=w_va), opts, len(labels), train=False)
            model.fit(ds_tr, validation_data=ds_va, epochs=plan.epochs, callbacks=callbacks, verbose=opts.verbose,
                      shuffle=False)  # the dataset shuffles itself
        plan.head_fit = head_fit
        return {"cached": cached, "head_fit": head_fit, "t_base": t_base}

    def config(self, plan: GenrePlan, opts: TrainOptions, spec, model, info: dict) -> dict:
        """The head and its fit, optimiser, weights, augmentation, device options, input shape
        and ``--synthetic`` rows."""
        parent, head_fit = plan.parent, info["head_fit"]
        phase = plan.phase
        return {
            "from_run": str(Path(opts.from_run).resolve()) if opts.from_run else None,
            "head": spec.head, "head_fit": head_fit,
            "optimizer": opts.optimizer if head_fit is None else None,
            "weights": ((opts.weights or spec.default_weights) if spec.is_transfer and phase != "scratch" and parent is None
                        else (parent.config.get("weights") if parent else None)),
            "label_smoothing": opts.label_smoothing, "mixup": opts.mixup, "image_aug": list(opts.image_aug),
            "cached_base": info["cached"], "mixed_precision": opts.mixed_precision and plan.gpus,
            "xla": bool(plan.jit), "strategy": opts.strategy, "input_shape": list(plan.input_shape),
            "data": {"synthetic": str(Path(opts.synthetic).resolve()) if opts.synthetic else None,
                     "synthetic_rows": plan.n_synthetic},
            "base_feature_seconds": round(info["t_base"], 2),
        }

    def fitted(self, plan: GenrePlan, spec, info: dict, epochs_run: int) -> str:
        """A logistic-regression head's fit in words (C and tracks), else the epochs."""
        hf = info.get("head_fit")
        if hf is None:
            return super().fitted(plan, spec, info, epochs_run)
        what = f"{hf['samples']} tracks" if not hf["variants"] else f"{hf['samples']} variants of {hf['tracks']} tracks"
        return (f"{spec.name}: logistic regression on the frozen backbone's track embeddings, C = {hf['C']:.3g}, "
                f"{what}")

    def figures(self, plan: GenrePlan, opts: TrainOptions, model, run_dir: Path) -> dict:
        """Calibrate the run (:meth:`calibrate`), then the figures on the valid and test splits
        (each split predicted once)."""
        seen: dict = {}  # the valid split is predicted once, for calibration and for the figures

        def predict(rs):
            key = tuple(r["path"] for r in rs)
            if key not in seen:
                seen[key] = predict_rows(model, plan.data, rs, plan.kind, opts.batch_size)
            return seen[key]

        self.calibrate(run_dir, model, plan, opts, predict)
        return evaluate_splits(predict, plan.rows, plan.labels, plan.kind)

    def calibrate(self, run_dir: Path, model, plan: GenrePlan, opts: TrainOptions, predict) -> None:
        """The run's temperature and rejection rules (``calibration.json``), from the final
        model's validation predictions (``predict(rows)``)."""
        calibrate_run(run_dir, predict, plan.rows, plan.labels, plan.kind)
        fit_open_set(run_dir, model, plan.data, plan.rows, plan.kind)  # the rejection rule (genrekit.openset)

    # -- a run -------------------------------------------------------------------------------

    def analyse(self, run: Run, blocks: Iterable[Block], batch_size: int = 32, timeline=None,
                pooled: bool = False) -> Analysis:
        """A window classifier: the mean of its windows' probabilities; a track model: each
        block answered as one track (:func:`genrekit.prediction.track_analysis`)."""
        model = run.model()
        if is_track_model(model):
            return track_analysis(model, blocks, timeline, pooled)
        return super().analyse(run, blocks, batch_size, timeline, pooled)

    def adaptable(self, run: Run) -> bool:
        """The default recipe's runs (a logistic-regression head on a track embedding)."""
        return run.config.get("head") == "logreg"


def feature_batches(folder, rows: list[dict], kind: str, batch_size: int):
    """The rows' features as model inputs, ``batch_size`` at a time, in order. One thread reads
    the next batch while the caller works on this one. (A tf.data pipeline, decoding with as many
    threads as it likes, fights the model for the CPU's cores; one thread one batch ahead
    does not.)"""
    if not rows:
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="genrekit-features") as pool:
        ahead = pool.submit(load_arrays, folder, rows[:batch_size], kind)
        for i in range(0, len(rows), batch_size):
            x = ahead.result()
            if i + batch_size < len(rows):
                ahead = pool.submit(load_arrays, folder, rows[i + batch_size:i + 2 * batch_size], kind)
            yield x


def base_outputs(extractor, batches, n: int, jit=False):
    """The frozen base's outputs for the ``n`` inputs of ``batches`` (arrays of inputs, in
    order), in one TensorFlow variable of shape (n, ...), not trainable, written batch by batch
    in place: the head's batches are gathered from it (:func:`cached_batches`) with no copy of
    the whole (a NumPy array then a tensor made of it would copy every output twice). One function traced for every batch size: Keras'
    ``predict`` traces the whole base again for a partial last batch.
    The base runs as its inference copy with the BatchNorm layers folded into the convolutions
    (``genrekit.models.folding``: the same outputs to float round-off,
    faster)."""
    import tensorflow as tf

    extractor = fold_batchnorm(extractor)
    spec = tf.TensorSpec((None, *extractor.input_shape[1:]), tf.float32)
    step = tf.function(lambda x: extractor(x, training=False), input_signature=[spec], autograph=False,
                       jit_compile=bool(jit))
    out, i = None, 0
    for x in batches:
        f = step(x)
        if out is None:  # in host memory (the head's batches are gathered by tf.data)
            with tf.device("/CPU:0"):
                out = tf.Variable(tf.zeros((n, *f.shape[1:]), f.dtype), trainable=False, name="base_outputs")
        if i + len(f) > n:
            raise RuntimeError(f"the base pass gave more than {n} outputs")
        out[i:i + len(f)].assign(f)
        i += len(f)
    if i != n:
        raise RuntimeError(f"the base pass gave {i} outputs for {n} inputs")
    return out


def cached_batches(features, rows: np.ndarray, y: np.ndarray, batch_size: int, seed: int, weights=None):
    """Shuffled batches (x, y) of the cached base outputs ``features[rows]`` (a tensor or
    variable, e.g. :func:`base_outputs`), reshuffled every epoch: the same order as
    ``from_tensor_slices((features[rows], y)).shuffle(len(y), seed).batch(batch_size)``, but
    the shuffled elements are row numbers and each batch is gathered from ``features`` where it
    lies (building that dataset copies all the rows into a new tensor first). ``weights``: each
    row's sample weight, batches (x, y, w)."""
    import tensorflow as tf

    parts = (np.asarray(rows, dtype=np.int64), y) + (() if weights is None else (np.asarray(weights),))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return ds.map(lambda i, label, *w: (tf.gather(features, i), label, *w))


def fused_adam(optimizer):
    """``optimizer`` if it is not exactly Keras' Adam; otherwise the same Adam (its config)
    whose update of each variable is TensorFlow's fused ``ResourceApplyAdam`` kernel: the same
    formula (m, v, and the bias-corrected step with epsilon outside the square root), one pass
    over the variable instead of about ten element-wise ops, which counts on the cached transfer
    phase's large head_dense kernel."""
    import keras
    import tensorflow as tf

    if type(optimizer) is not keras.optimizers.Adam or optimizer.amsgrad:
        return optimizer

    class FusedAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            dt = variable.dtype
            step = tf.cast(self.iterations + 1, dt)
            i = self._get_variable_index(variable)

            def c(v):
                return tf.cast(v, dt)

            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[i].handle, v=self._velocities[i].handle,
                beta1_power=tf.pow(c(self.beta_1), step), beta2_power=tf.pow(c(self.beta_2), step),
                lr=c(learning_rate), beta1=c(self.beta_1), beta2=c(self.beta_2), epsilon=c(self.epsilon),
                grad=c(gradient), use_locking=False)

    return FusedAdam.from_config(optimizer.get_config())


def calibrate_run(run_dir: Path, predict, rows, labels, kind, accept: float = REJECT_ACCEPT) -> dict:
    """Fit the run's temperature and rejection threshold on its final model's validation
    predictions and write ``calibration.json``. Both work on *track-level* probabilities (the
    mean of a track's window probabilities: what ``predict`` prints): T minimises their NLL; the
    threshold on the top calibrated probability keeps ``accept`` of the validation tracks
    accepted. No valid split, fewer than ``MIN_CALIBRATION_TRACKS`` validation tracks, or a
    valid split without a single error (T has no finite optimum): T stays 1, and the file
    says why."""
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
        else:  # the validation split is the training collection's: no sharper than the raw model
            cal["temperature"], note = choose_temperature(tp, ty, allow_sharpen=False)
            if note:
                cal["note"] = note
        after = apply_temperature(tp, cal["temperature"])
        cal["reject_threshold"] = choose_reject_threshold(after, accept)
        cal["reject_threshold_per_genre"] = per_genre_thresholds(after, ty, len(labels),
                                                                 lambda a: choose_reject_threshold(a, accept))
        cal.update({"valid_ece_before": expected_calibration_error(tp, ty),
                    "valid_ece_after": expected_calibration_error(after, ty),
                    "valid_nll_before": nll(tp, ty), "valid_nll_after": nll(after, ty)})
    write_json_atomic(run_dir / CALIBRATION, cal, only_if_changed=False)
    log(f"calibration: temperature {cal['temperature']:.3g}"
        + (f", rejection threshold {cal['reject_threshold']:.3g} (keeps {accept:.0%} of "
           f"{cal['valid_tracks']} validation tracks)" if cal["reject_threshold"] is not None else "")
        + (f" ({cal['note']})" if "note" in cal else ""))
    return cal


class GenreWindowsTask(GenreTask):
    """The genre classifiers trained by Keras on windows (images, sequences, mel windows)."""


TASK = GenreWindowsTask()
