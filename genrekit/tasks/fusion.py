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

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.loaders import label_ids, load_arrays, select
from genrekit.data_tools.manifest import check_no_leak, read_manifest
from genrekit.errors import UserError
from genrekit.models.tempo import build_fusion
from genrekit.multidata import folders_of
from genrekit.prediction import (
    Analysis,
    Block,
    fusion_audio_inputs,
    fusion_inputs,
    fusion_model_inputs,
    fusion_row_inputs,
    mean_over_windows,
    predicted_tempi,
    run_tempo_range,
)
from genrekit.runs import TEMPO_MODEL, Run
from genrekit.tasks.base import TaskPlugin
from genrekit.training import (
    Plan,
    TrainOptions,
    check_finite_features,
    compile_classifier,
    evaluate_splits,
    log,
    save_model,
)


@dataclass
class FusionPlan(Plan):
    """A fusion model's plan, completed by :meth:`FusionTask.build`."""
    genre: Run | None = None  # --genre-run
    tempo: Run | None = None  # --tempo-run
    lo_hi: tuple = ()  # the tempo run's BPM range
    tempi: dict | None = None  # (track id, augmentation) -> predicted BPM
    x_tr: list | None = None  # the model's inputs and targets
    y_tr: np.ndarray | None = None
    x_va: list | None = None
    y_va: np.ndarray | None = None


class FusionTask(TaskPlugin):
    """Targets: the genre run's genres; model: the genre run's frozen embedding + an MLP of the
    tempo run's predicted tempo; figures: those of a genre classifier. A run answers a file
    with the tempo its own tempo model predicts for the whole track fed in: no batches of
    several files, no streaming, no embedding."""

    name = "fusion"
    batchable = False
    embeds = False

    def plan(self, opts: TrainOptions, spec) -> FusionPlan:
        """Check the genre run, the tempo run and the feature folder (one feature config for all
        three), and predict every train and valid row's tempo with the tempo run."""
        if not opts.genre_run or not opts.tempo_run:
            raise UserError("--arch fusion needs --genre-run RUN (a genre classifier) and --tempo-run RUN "
                            "(a --task tempo run)")
        if opts.phase not in (None, "scratch") or opts.from_run:
            raise UserError("--arch fusion trains new dense layers on frozen embeddings: no --phase or --from")
        for flag, on in (("--mixup", opts.mixup), ("--image-aug", opts.image_aug), ("--synthetic", opts.synthetic)):
            if on:
                raise UserError(f"{flag} is not available with --arch fusion")
        genre, tempo = Run(opts.genre_run), Run(opts.tempo_run)
        if genre.task != "genre" or genre.arch == self.name:
            raise UserError(f"--genre-run {opts.genre_run} is a {genre.arch} {genre.task} run, not a genre classifier")
        if tempo.task != "tempo":
            raise UserError(f"--tempo-run {opts.tempo_run} is a {tempo.task} run; train one with --task tempo")
        data = Path(folders_of(opts.data)[0])  # one folder (fit_task refuses several)
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
        return FusionPlan(data=data, fc=fc, rows=rows, kind=kind, labels=labels, train_rows=train_rows,
                    valid_rows=valid_rows, phase="scratch", tag="scratch",
                    title="fusion (genre embedding + predicted tempo)",
                    epochs=opts.epochs if opts.epochs is not None else 30,
                    lr=opts.lr if opts.lr is not None else 1e-3,
                    genre=genre, tempo=tempo, lo_hi=lo_hi, tempi=tempi)

    def build(self, plan: FusionPlan, opts: TrainOptions, spec):
        """The rows' inputs (features and predicted tempo) and targets in memory, and the fusion
        model on the genre run's frozen embedding, compiled."""
        import keras

        tempi, lo_hi = plan.tempi, plan.lo_hi

        def xy(rs):
            bpm = np.array([tempi[(r["track_id"], r["augmentation"])] for r in rs])
            x = check_finite_features(load_arrays(plan.data, rs, plan.kind), rs, plan.data)
            return fusion_model_inputs(x, bpm, lo_hi), label_ids(rs, plan.labels)

        (x_tr, y_tr), (x_va, y_va) = xy(plan.train_rows), xy(plan.valid_rows)
        if opts.label_smoothing > 0:
            y_tr = keras.utils.to_categorical(y_tr, len(plan.labels))
            y_va = keras.utils.to_categorical(y_va, len(plan.labels))
        plan.x_tr, plan.y_tr, plan.x_va, plan.y_va = x_tr, y_tr, x_va, y_va
        try:
            model = build_fusion(plan.genre.model(), len(plan.labels), **dict(opts.hparams))
        except (TypeError, ValueError) as exc:
            raise UserError(f"fusion: cannot build with --hparam {dict(opts.hparams)}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        compile_classifier(model, opts, plan.lr, False)
        return model

    def fit(self, plan: FusionPlan, opts: TrainOptions, model, callbacks: list) -> dict:
        """Fit on the inputs in memory; no facts for config.json."""
        model.fit(plan.x_tr, plan.y_tr, validation_data=(plan.x_va, plan.y_va), epochs=plan.epochs,
                  batch_size=opts.batch_size, shuffle=True, callbacks=callbacks, verbose=opts.verbose)
        return {}

    def save(self, plan: FusionPlan, opts: TrainOptions, model, run_dir: Path, info: dict) -> None:
        """Keep a copy of the tempo model (``tempo_model.keras``): the run predicts on its own."""
        save_model(plan.tempo.model(), run_dir / TEMPO_MODEL)  # the run predicts on its own

    def config(self, plan: FusionPlan, opts: TrainOptions, spec, model, info: dict) -> dict:
        """The genre and tempo runs, the tempo range, label smoothing and trainable parameters;
        the training tracks of all three runs count as seen."""
        genre, tempo = plan.genre, plan.tempo
        return {
            "genre_run": str(genre.path.resolve()), "genre_arch": genre.arch, "tempo_run": str(tempo.path.resolve()),
            "tempo_range": list(plan.lo_hi), "label_smoothing": opts.label_smoothing,
            "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            # the genre and tempo runs' training tracks count as seen: evaluate refuses them
            "data": {"train_tracks": sorted({r["track_id"] for r in plan.train_rows}
                                            | set(genre.config.get("data", {}).get("train_tracks", []))
                                            | set(tempo.config.get("data", {}).get("train_tracks", []))),
                     # a genre run of several --data folders: its prefixes, so evaluate knows them
                     **({"collections": genre.config["data"]["collections"]}
                        if (genre.config.get("data") or {}).get("collections") else {})},
        }

    def figures(self, plan: FusionPlan, opts: TrainOptions, model, run_dir: Path) -> dict:
        """A genre classifier's figures, each row's tempo input predicted by the tempo model."""
        tempo_model, lo_hi = plan.tempo.model(), plan.lo_hi

        def predict(rs):
            x = fusion_row_inputs(tempo_model, plan.data, rs, plan.kind, lo_hi)
            return model.predict(x, batch_size=opts.batch_size, verbose=0)

        return evaluate_splits(predict, plan.rows, plan.labels, plan.kind)

    # -- a run -------------------------------------------------------------------------------

    def analyse(self, run: Run, blocks: Iterable[Block], batch_size: int = 32, timeline=None,
                pooled: bool = False) -> Analysis:
        """The mean window probabilities, each block's windows fed with the tempo the run's own
        tempo model predicts for the block (``tempo_bpm``: their median)."""
        model, bpms = run.model(), []

        def predict(b):
            x, bpm = fusion_audio_inputs(run, b.y, b.x)
            bpms.append(bpm)
            return model.predict(x, batch_size=batch_size, verbose=0)

        p = mean_over_windows(predict, blocks, timeline)
        return Analysis(p, tempo_bpm=round(float(np.median(bpms)), 1))

    def predict_rows(self, run: Run, folder, rows: list[dict], batch_size: int = 32) -> np.ndarray:
        """Class probabilities for manifest rows, the tempo input predicted from the same folder."""
        return run.model().predict(fusion_inputs(run, folder, rows), batch_size=batch_size, verbose=0)


TASK = FusionTask()
