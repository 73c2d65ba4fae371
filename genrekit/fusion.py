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

import sys
import time
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig, extract
from genrekit.data_tools.fsio import write_json_atomic
from genrekit.data_tools.loaders import label_ids, load_arrays, select
from genrekit.data_tools.manifest import check_no_leak, manifest_checksum, read_manifest
from genrekit.errors import UserError
from genrekit.runs import (
    HISTORY,
    LABELS,
    MODEL,
    TEMPO_MODEL,
    Run,
    library_versions,
    run_folder,
    write_config,
)
from genrekit.tempo import KIND as TEMPO_KIND
from genrekit.tempo import audio_bpm, predict_window_bpm, run_tempo_range, scale, track_tempi


def predicted_tempi(tempo_model, folder, rows: list[dict], lo_hi) -> dict[tuple[str, str], float]:
    """(track id, augmentation) -> predicted BPM, for every track/variant of ``rows``, from the
    tempogram windows of the same folder."""
    wanted = {(r["track_id"], r["augmentation"]) for r in rows}
    trows = [r for r in select(read_manifest(folder), TEMPO_KIND, ("train", "valid", "test"))
             if (r["track_id"], r["augmentation"]) in wanted]
    found = track_tempi(trows, predict_window_bpm(tempo_model, folder, trows, lo_hi)) if trows else {}
    missing = sorted(wanted - set(found))
    if missing:
        t, a = missing[0]
        raise UserError(f"{folder} has no tempogram windows for {len(missing)} track variant(s) (e.g. {t}, {a}): "
                        "render the genre features and tempograms together "
                        "(genrekit augment --features <genre kind>,tempogram)")
    return found


def _inputs(x: np.ndarray, bpm: np.ndarray, lo_hi) -> list:
    """The fusion model's inputs, in order: genre feature windows, scaled predicted tempo."""
    return [x, np.clip(scale(bpm, lo_hi), 0.0, 1.0)[:, None].astype(np.float32)]


def fusion_inputs(run: Run, folder, rows: list[dict]) -> list:
    lo_hi = run_tempo_range(run)
    tempi = predicted_tempi(run.tempo_model(), folder, rows, lo_hi)
    bpm = np.array([tempi[(r["track_id"], r["augmentation"])] for r in rows])
    return _inputs(load_arrays(folder, rows, run.kind), bpm, lo_hi)


def fusion_audio_inputs(run: Run, y: np.ndarray, genre_x: np.ndarray) -> tuple[list, float]:
    """Inputs for one waveform (predict): the genre windows plus the track's predicted tempo."""
    lo_hi = run_tempo_range(run)
    tg = np.stack([f for _, f in extract(y, run.feature_config, TEMPO_KIND)])
    bpm = audio_bpm(run.tempo_model(), tg, lo_hi)
    return _inputs(genre_x, np.full(len(genre_x), bpm), lo_hi), bpm


def train_fusion(opts) -> dict:
    import keras

    from genrekit.train import (
        best_model_checkpoint,
        check_finite_features,
        check_finite_model,
        compile_classifier,
        epochs_run,
        evaluate_splits,
        log,
        plot_curves,
        save_model,
        stop_on_non_finite_loss,
    )
    from genrekit.models.registry import check_hparams
    from genrekit.models.tempo import build_fusion

    if not opts.genre_run or not opts.tempo_run:
        raise UserError("--arch fusion needs --genre-run RUN (a genre classifier) and --tempo-run RUN "
                        "(a --task tempo run)")
    if opts.phase not in (None, "scratch") or opts.from_run:
        raise UserError("--arch fusion trains new dense layers on frozen embeddings: no --phase or --from")
    for flag, on in (("--mixup", opts.mixup), ("--image-aug", opts.image_aug), ("--synthetic", opts.synthetic)):
        if on:
            raise UserError(f"{flag} is not available with --arch fusion")
    check_hparams("fusion", dict(opts.hparams))
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
    epochs = opts.epochs if opts.epochs is not None else 30
    lr = opts.lr if opts.lr is not None else 1e-3
    lo_hi = run_tempo_range(tempo)

    keras.utils.set_random_seed(opts.seed)
    t0 = time.perf_counter()
    log(f"predicting tempi with {tempo.path} for {len(train_rows) + len(valid_rows)} {kind} rows")
    tempi = predicted_tempi(tempo.model(), data, train_rows + valid_rows, lo_hi)
    # only once the inputs are known to be complete; complete-or-absent
    with run_folder(opts.out, "fusion", "scratch") as (run_dir, final_dir):

        def xy(rs):
            bpm = np.array([tempi[(r["track_id"], r["augmentation"])] for r in rs])
            x = check_finite_features(load_arrays(data, rs, kind), rs, data)
            return _inputs(x, bpm, lo_hi), label_ids(rs, labels)

        (x_tr, y_tr), (x_va, y_va) = xy(train_rows), xy(valid_rows)
        try:
            model = build_fusion(genre.model(), len(labels), **dict(opts.hparams))
        except (TypeError, ValueError) as exc:
            raise UserError(f"fusion: cannot build with --hparam {dict(opts.hparams)}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        compile_classifier(model, opts, lr, False)
        if opts.label_smoothing > 0:
            y_tr_fit = keras.utils.to_categorical(y_tr, len(labels))
            y_va_fit = keras.utils.to_categorical(y_va, len(labels))
        else:
            y_tr_fit, y_va_fit = y_tr, y_va
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=opts.patience, restore_best_weights=True),
                     keras.callbacks.CSVLogger(str(run_dir / HISTORY)),
                     best_model_checkpoint(model, run_dir / "checkpoint.keras"), stop_on_non_finite_loss(),
                     *opts.extra_callbacks]
        model.fit(x_tr, y_tr_fit, validation_data=(x_va, y_va_fit), epochs=epochs, batch_size=opts.batch_size,
                  shuffle=True, callbacks=callbacks, verbose=opts.verbose)
        seconds = time.perf_counter() - t0
        check_finite_model(model)
        save_model(model, run_dir / MODEL)
        save_model(tempo.model(), run_dir / TEMPO_MODEL)
        write_json_atomic(run_dir / LABELS, labels, only_if_changed=False)
        fc.save(run_dir)
        write_config(run_dir, {
            "arch": "fusion", "phase": "scratch", "feature_kind": kind, "task": "genre",
            "genre_run": str(genre.path.resolve()), "genre_arch": genre.arch, "tempo_run": str(tempo.path.resolve()),
            "tempo_range": list(lo_hi), "epochs": epochs, "batch_size": opts.batch_size, "learning_rate": lr,
            "optimizer": opts.optimizer, "patience": opts.patience, "seed": opts.seed, "hparams": dict(opts.hparams),
            "label_smoothing": opts.label_smoothing, "parameters": int(model.count_params()),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
            "feature_config": fc.to_dict(), "feature_fingerprint": fc.fingerprint(),
            "data": {"folder": str(data.resolve()), "manifest_sha256": manifest_checksum(data),
                     # the genre and tempo runs' training tracks count as seen: evaluate refuses them
                     "train_tracks": sorted({r["track_id"] for r in train_rows}
                                            | set(genre.config.get("data", {}).get("train_tracks", []))
                                            | set(tempo.config.get("data", {}).get("train_tracks", []))),
                     "valid_tracks": sorted({r["track_id"] for r in valid_rows}),
                     "train_rows": len(train_rows), "valid_rows": len(valid_rows)},
            "train_seconds": round(seconds, 2), "versions": library_versions(),
            "genrekit_command": " ".join(sys.argv[1:]) or None})
        plot_curves(run_dir, "fusion (genre embedding + predicted tempo)")
        run = Run(run_dir)
        results = evaluate_splits(lambda rs: run.predict_rows(data, rs, opts.batch_size), rows, labels, kind)
        write_json_atomic(run_dir / "train_metrics.json", results, only_if_changed=False)
        n_epochs = epochs_run(run_dir)
    return {"run": str(final_dir), "phase": "scratch", "metrics": results, "seconds": seconds,
            "epochs_run": n_epochs}
