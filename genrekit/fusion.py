"""Tempo -> genre fusion behind ``genrekit train --arch fusion --genre-run RUN --tempo-run RUN``.

The tempo study's design: a trained genre model's convolutional embedding, frozen, is
concatenated with a small MLP embedding of the tempo that a trained tempo regressor predicts
for the same track, and new dense layers learn the genre from both. Both runs must have been
trained on features made with one feature config, and the feature folder must hold the genre
run's features and tempogram windows (``genrekit augment --features melspec,tempogram``).

The tempo input of a row is the tempo run's track-level prediction (median over the track's
tempogram windows) for the same track and augmentation variant. The fusion run keeps its own
copy of the tempo model (``tempo_model.keras``) so that predict/evaluate/eval-spotify need
nothing else. Note: on training tracks the tempo regressor has seen the tracks it predicts,
so its tempi are better there than on new tracks — as in the study, which stacks the same way.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.loaders import label_ids, load_arrays, select
from genrekit.data_tools.manifest import check_no_leak, read_manifest
from genrekit.errors import UserError
from genrekit.models.tempo import build_fusion
from genrekit.prediction import (
    fusion_model_inputs,
    fusion_row_inputs,
    predicted_tempi,
    run_tempo_range,
)
from genrekit.runs import TEMPO_MODEL, Run
from genrekit.training import (
    Plan,
    Task,
    TrainOptions,
    check_finite_features,
    compile_classifier,
    evaluate_splits,
    log,
    save_model,
)


class FusionTask(Task):
    """Targets: the genre run's genres; model: the genre run's frozen embedding + an MLP of the
    tempo run's predicted tempo; figures: those of a genre classifier."""

    name = "fusion"

    def plan(self, opts: TrainOptions, spec) -> Plan:
        if not opts.genre_run or not opts.tempo_run:
            raise UserError("--arch fusion needs --genre-run RUN (a genre classifier) and --tempo-run RUN "
                            "(a --task tempo run)")
        if opts.phase not in (None, "scratch") or opts.from_run:
            raise UserError("--arch fusion trains new dense layers on frozen embeddings: no --phase or --from")
        for flag, on in (("--mixup", opts.mixup), ("--image-aug", opts.image_aug), ("--synthetic", opts.synthetic)):
            if on:
                raise UserError(f"{flag} is not available with --arch fusion")
        genre, tempo = Run(opts.genre_run), Run(opts.tempo_run)
        if genre.task != "genre" or genre.arch == "fusion":
            raise UserError(f"--genre-run {opts.genre_run} is a {genre.arch} {genre.task} run, not a genre classifier")
        if tempo.task != "tempo":
            raise UserError(f"--tempo-run {opts.tempo_run} is a {tempo.task} run; train one with --task tempo")
        data = Path(opts.data)
        fc = FeatureConfig.load(data)
        for role, run in (("genre", genre), ("tempo", tempo)):
            if run.feature_config.fingerprint() != fc.fingerprint():
                raise UserError(f"{data} was made with another feature config than the {role} run {run.path}: "
                                "both runs and the data must share one feature config")
        rows = read_manifest(data)
        check_no_leak(rows)
        kind, labels = genre.kind, list(genre.labels)
        train_rows, valid_rows = select(rows, kind, ("train",)), select(rows, kind, ("valid",))
        if not train_rows or not valid_rows:
            raise UserError(f"{data} needs train and valid rows of {kind} features (the genre run's input)")
        lo_hi = run_tempo_range(tempo)
        log(f"predicting tempi with {tempo.path} for {len(train_rows) + len(valid_rows)} {kind} rows")
        # before the run folder exists: a folder without tempogram windows is refused here
        tempi = predicted_tempi(tempo.model(), data, train_rows + valid_rows, lo_hi)
        return Plan(data=data, fc=fc, rows=rows, kind=kind, labels=labels, train_rows=train_rows,
                    valid_rows=valid_rows, phase="scratch", tag="scratch",
                    title="fusion (genre embedding + predicted tempo)",
                    epochs=opts.epochs if opts.epochs is not None else 30,
                    lr=opts.lr if opts.lr is not None else 1e-3,
                    extra={"genre": genre, "tempo": tempo, "lo_hi": lo_hi, "tempi": tempi})

    def build(self, plan: Plan, opts: TrainOptions, spec):
        import keras

        tempi, lo_hi = plan.extra["tempi"], plan.extra["lo_hi"]

        def xy(rs):
            bpm = np.array([tempi[(r["track_id"], r["augmentation"])] for r in rs])
            x = check_finite_features(load_arrays(plan.data, rs, plan.kind), rs, plan.data)
            return fusion_model_inputs(x, bpm, lo_hi), label_ids(rs, plan.labels)

        (x_tr, y_tr), (x_va, y_va) = xy(plan.train_rows), xy(plan.valid_rows)
        if opts.label_smoothing > 0:
            y_tr = keras.utils.to_categorical(y_tr, len(plan.labels))
            y_va = keras.utils.to_categorical(y_va, len(plan.labels))
        plan.extra.update(x_tr=x_tr, y_tr=y_tr, x_va=x_va, y_va=y_va)
        try:
            model = build_fusion(plan.extra["genre"].model(), len(plan.labels), **dict(opts.hparams))
        except (TypeError, ValueError) as exc:
            raise UserError(f"fusion: cannot build with --hparam {dict(opts.hparams)}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        compile_classifier(model, opts, plan.lr, False)
        return model

    def fit(self, plan: Plan, opts: TrainOptions, model, callbacks: list) -> dict:
        e = plan.extra
        model.fit(e["x_tr"], e["y_tr"], validation_data=(e["x_va"], e["y_va"]), epochs=plan.epochs,
                  batch_size=opts.batch_size, shuffle=True, callbacks=callbacks, verbose=opts.verbose)
        return {}

    def save(self, plan: Plan, opts: TrainOptions, model, run_dir: Path, info: dict) -> None:
        save_model(plan.extra["tempo"].model(), run_dir / TEMPO_MODEL)  # the run predicts on its own

    def config(self, plan: Plan, opts: TrainOptions, spec, model, info: dict) -> dict:
        genre, tempo = plan.extra["genre"], plan.extra["tempo"]
        return {
            "genre_run": str(genre.path.resolve()), "genre_arch": genre.arch, "tempo_run": str(tempo.path.resolve()),
            "tempo_range": list(plan.extra["lo_hi"]), "label_smoothing": opts.label_smoothing,
            "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            # the genre and tempo runs' training tracks count as seen: evaluate refuses them
            "data": {"train_tracks": sorted({r["track_id"] for r in plan.train_rows}
                                            | set(genre.config.get("data", {}).get("train_tracks", []))
                                            | set(tempo.config.get("data", {}).get("train_tracks", [])))},
        }

    def figures(self, plan: Plan, opts: TrainOptions, model, run_dir: Path) -> dict:
        tempo_model, lo_hi = plan.extra["tempo"].model(), plan.extra["lo_hi"]

        def predict(rs):
            x = fusion_row_inputs(tempo_model, plan.data, rs, plan.kind, lo_hi)
            return model.predict(x, batch_size=opts.batch_size, verbose=0)

        return evaluate_splits(predict, plan.rows, plan.labels, plan.kind)


TASK = FusionTask()
