"""Tempo regression behind ``genrekit train --task tempo`` and tempo evaluation.

Targets are BPM from an annotation file (``track_id,bpm``; GTZAN's 999 tempi ship with
genrekit and are the default), scaled to [0, 1] over 40-250 BPM; a time-stretched training
variant's target is the annotation times its stretch rate. The regressor sees tempogram
windows; a track's tempo is the median of its windows' predictions. Figures: MAE and median
absolute error in BPM, accuracy 1 (within 4 %) and accuracy 2 (octave errors allowed), at
window and track level, and a true-vs-predicted scatter plot.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.fsio import read_csv, write_json_atomic, write_text_atomic
from genrekit.data_tools.loaders import load_arrays, select
from genrekit.data_tools.manifest import check_no_leak, read_manifest
from genrekit.errors import UserError
from genrekit.evaluation.metrics import tempo_metrics
from genrekit.evaluation.plots import plot_history, plot_tempo_scatter
from genrekit.models import build_model
from genrekit.models.registry import INPUT_NORM
from genrekit.multidata import folders_of
from genrekit.prediction import Analysis, Block, predict_window_bpm, run_tempo_range, track_tempi
from genrekit.runs import HISTORY, Run, check_feature_config, check_leakage
from genrekit.tasks.base import TaskPlugin
from genrekit.tempi import KIND, TEMPO_RANGE, load_tempi, row_bpm, scale
from genrekit.training import (
    Plan,
    TrainOptions,
    check_finite_features,
    log,
    make_optimizer,
)


def accuracy1_metric(lo_hi=TEMPO_RANGE, tolerance: float = 0.04):
    """A Keras metric: share of predictions within ``tolerance`` of the true tempo (scaled units in,
    BPM compared). Early stopping watches it on the validation windows: with octave errors the
    validation MSE is lowest for a model that predicts the median tempo everywhere."""
    import keras
    from keras import ops

    lo, hi = lo_hi

    def accuracy1(y_true, y_pred):
        t = ops.reshape(y_true, (-1,)) * (hi - lo) + lo
        p = ops.reshape(y_pred, (-1,)) * (hi - lo) + lo
        return ops.cast(ops.abs(p - t) <= tolerance * t, "float32")

    return keras.metrics.MeanMetricWrapper(accuracy1, name="accuracy1")


def _targets(rows: list[dict], tempi: dict, what: str, lo_hi) -> tuple[list[dict], np.ndarray]:
    """Rows with an annotation inside the BPM range, and their BPM."""
    keep, bpm, missing, outside = [], [], 0, 0
    for r in rows:
        b = row_bpm(r, tempi)
        if b is None:
            missing += 1
        elif not lo_hi[0] <= b <= lo_hi[1]:
            outside += 1
        else:
            keep.append(r)
            bpm.append(b)
    if missing or outside:
        print(f"{what}: {missing} window(s) without a tempo annotation and {outside} outside "
              f"{lo_hi[0]:g}-{lo_hi[1]:g} BPM left out", file=sys.stderr, flush=True)
    return keep, np.array(bpm, dtype=np.float64)


# -- training ----------------------------------------------------------------------------------

@dataclass
class TempoPlan(Plan):
    """A tempo regressor's plan, completed by :meth:`TempoTask.build`."""
    arch: str = ""
    tempi: dict | None = None  # (track id) -> annotated BPM
    bpm_tr: np.ndarray | None = None  # the training and validation windows' BPM
    bpm_va: np.ndarray | None = None
    x_tr: np.ndarray | None = None  # their tempogram windows
    x_va: np.ndarray | None = None
    input_shape: tuple = ()


class TempoTask(TaskPlugin):
    """Targets: BPM (scaled to [0, 1]); model: tempocnn on tempogram windows; figures: MAE,
    median absolute error, accuracy 1 and 2 per window and per track. A run answers a file
    with the median of its windows' BPM."""

    name = "tempo"
    monitor = ("val_accuracy1", "max")  # with octave errors the validation MSE favours the median tempo
    classifies = False
    batchable = False
    embeds = False

    def check_task_option(self, spec, task_option: str) -> None:
        """A tempo regressor is trained with ``--task tempo`` only."""
        if task_option != spec.task:
            raise UserError(f"{spec.name} regresses tempo: train it with --task tempo")

    def plan(self, opts: TrainOptions, spec) -> TempoPlan:
        """Check the options and the feature folder; the train and valid tempogram windows with
        an annotated tempo inside the BPM range, and their BPM."""
        if opts.phase not in (None, "scratch") or opts.from_run:
            raise UserError("tempo regression trains from scratch (no --phase transfer/finetune, no --from)")
        for flag, on in (("--label-smoothing", opts.label_smoothing), ("--mixup", opts.mixup),
                         ("--image-aug", opts.image_aug), ("--synthetic", opts.synthetic)):
            if on:
                raise UserError(f"{flag} is for genre classifiers, not for --task tempo")
        data = Path(folders_of(opts.data)[0])  # one folder (fit_task refuses several)
        fc = FeatureConfig.load(data)
        rows = read_manifest(data)
        check_no_leak(rows)
        if not select(rows, KIND, ("train", "valid", "test")):
            have = sorted({r.get("feature", "?") for r in rows})
            raise UserError(f"tempo regression trains on tempogram features but {data} has only "
                            f"{', '.join(have) or 'no'} features (rerun augment with --features tempogram)")
        tempi = load_tempi(opts.tempo_file)
        train_rows, bpm_tr = _targets(select(rows, KIND, ("train",)), tempi, "train", TEMPO_RANGE)
        valid_rows, bpm_va = _targets(select(rows, KIND, ("valid",)), tempi, "valid", TEMPO_RANGE)
        if not train_rows:
            raise UserError(f"no training tempogram windows of {data} have a tempo in {opts.tempo_file or 'GTZAN tempi'}")
        if not valid_rows:
            raise UserError(f"no annotated validation windows in {data}: early stopping needs a valid split")
        return TempoPlan(data=data, fc=fc, rows=rows, kind=KIND, labels=["bpm"], train_rows=train_rows,
                    valid_rows=valid_rows, phase="scratch", tag="tempo", title=f"{spec.name} tempo regression",
                    epochs=opts.epochs if opts.epochs is not None else 60,
                    lr=opts.lr if opts.lr is not None else 1e-3,
                    arch=spec.name, tempi=tempi, bpm_tr=bpm_tr, bpm_va=bpm_va)

    def build(self, plan: TempoPlan, opts: TrainOptions, spec):
        """Load the windows into memory and build the tempo model (input normalisation adapted
        on the training windows), compiled with MSE, MAE and accuracy 1."""
        import keras

        input_shape = plan.fc.feature_shape(KIND)
        tg = plan.fc.of(KIND)
        hp = {"bpm_min": tg.bpm_min, "bpm_max": tg.bpm_max, "tempo_range": TEMPO_RANGE,
              **opts.hparams}
        model = build_model(spec.name, input_shape, 1, **hp)
        x_tr = check_finite_features(load_arrays(plan.data, plan.train_rows, KIND), plan.train_rows, plan.data)
        x_va = check_finite_features(load_arrays(plan.data, plan.valid_rows, KIND), plan.valid_rows, plan.data)
        norm = model.get_layer(INPUT_NORM) if INPUT_NORM in spec.layers else None
        if norm is not None:
            norm.adapt(x_tr)
        model.compile(optimizer=make_optimizer(opts.optimizer, plan.lr), loss="mse",
                      metrics=[keras.metrics.MeanAbsoluteError(name="mae"), accuracy1_metric()])
        plan.x_tr, plan.x_va, plan.input_shape = x_tr, x_va, input_shape
        return model

    def fit(self, plan: TempoPlan, opts: TrainOptions, model, callbacks: list) -> dict:
        """Fit on the windows in memory and their scaled BPM; no facts for config.json."""
        log(f"training {plan.arch} on {len(plan.train_rows)} tempogram windows "
            f"({len({r['track_id'] for r in plan.train_rows})} tracks), validating on {len(plan.valid_rows)}")
        model.fit(plan.x_tr, scale(plan.bpm_tr),
                  validation_data=(plan.x_va, scale(plan.bpm_va)), epochs=plan.epochs,
                  batch_size=opts.batch_size, shuffle=True, callbacks=callbacks, verbose=opts.verbose)
        return {}

    def config(self, plan: TempoPlan, opts: TrainOptions, spec, model, info: dict) -> dict:
        """The BPM range, the tempo file, what early stopping watches and the input shape."""
        return {"tempo_range": list(TEMPO_RANGE),
                "tempo_file": str(Path(opts.tempo_file).resolve()) if opts.tempo_file else None,
                "early_stopping": "val_accuracy1 (max)", "input_shape": list(plan.input_shape)}

    def figures(self, plan: TempoPlan, opts: TrainOptions, model, run_dir: Path) -> dict:
        """Tempo figures (:func:`tempo_figures`) on the original windows of the valid and test
        splits."""
        results = {}
        for split in ("valid", "test"):
            sr = [r for r in select(plan.rows, KIND, (split,)) if r["augmentation"] == "original"]
            sr, _ = _targets(sr, plan.tempi, split, (0.0, np.inf))
            if sr:
                results[split] = tempo_figures(sr, predict_window_bpm(model, plan.data, sr), plan.tempi)
        return results

    # -- a run -------------------------------------------------------------------------------

    def analyse(self, run: Run, blocks: Iterable[Block], batch_size: int = 32, timeline=None,
                pooled: bool = False) -> Analysis:
        """The median of the windows' predicted BPM, as ``[bpm]``."""
        bpms: list[float] = []
        for b in blocks:
            bpms.extend(predict_window_bpm(run.model(), None, [], run_tempo_range(run), batch_size, x=b.x).tolist())
        return Analysis(np.array([float(np.median(bpms))]))

    def answer_fields(self, values: np.ndarray) -> dict:
        """``bpm``: the file's tempo, to 0.1 BPM."""
        return {"bpm": round(float(values[0]), 1)}

    def evaluate(self, run: Run, data, split: str, out, tempo_file=None) -> dict:
        """Tempo figures, scatter plot and report (:func:`evaluate_tempo`)."""
        return evaluate_tempo(run, data, split, out, tempo_file)

    def format_metrics(self, res: dict) -> str:
        """The tempo figures as a table (:func:`format_tempo`)."""
        return format_tempo(res)

    def card_output(self, run: Run) -> str:
        """A tempo run's output per window."""
        return ("a tempo run: the model's output per window (genrekit predict reports the median BPM); "
                "no calibration applies")


TASK = TempoTask()


# -- figures ----------------------------------------------------------------------------

def tempo_figures(rows: list[dict], window_bpm, tempi: dict) -> dict:
    """Window ("clip") and track level tempo figures; rows must all have annotations."""
    true_w = np.array([row_bpm(r, tempi) for r in rows])
    per_track = track_tempi(rows, window_bpm)
    keys = sorted(per_track)
    true_t = np.array([row_bpm({"track_id": t, "augmentation": a}, tempi) for t, a in keys])
    pred_t = np.array([per_track[k] for k in keys])
    return {"clip": tempo_metrics(true_w, window_bpm), "track": tempo_metrics(true_t, pred_t),
            "tracks": [{"track_id": t, "true_bpm": round(float(b), 2), "predicted_bpm": round(float(p), 2)}
                       for (t, _), b, p in zip(keys, true_t, pred_t, strict=True)]}


def evaluate_tempo(run: Run, data, split: str = "test", out=None, tempo_file=None) -> dict:
    """``genrekit evaluate`` of a tempo run: the figures on ``split``'s annotated original
    windows, written to ``out`` (default: the run folder) with the scatter plot, training
    curves, ``metrics.json`` and ``report.md``; returns them."""
    data = Path(data)
    fc = check_feature_config(run, data)
    tempi = load_tempi(tempo_file if tempo_file is not None else run.config.get("tempo_file"))
    rows = [r for r in select(read_manifest(data), KIND, (split,)) if r["augmentation"] == "original"]
    if not rows:
        raise UserError(f"the {split} split of {data} has no tempogram rows")
    rows, _ = _targets(rows, tempi, split, (0.0, np.inf))
    if not rows:
        raise UserError(f"no {split} track of {data} has a tempo annotation")
    check_leakage(run, {r["track_id"] for r in rows})
    lo_hi = run_tempo_range(run)
    res = tempo_figures(rows, predict_window_bpm(run.model(), data, rows, lo_hi), tempi)
    res.update({"task": "tempo", "run": str(run.path), "arch": run.arch, "split": split, "data": str(data),
                "feature_fingerprint": fc.fingerprint()})
    out = Path(out) if out else run.path
    out.mkdir(parents=True, exist_ok=True)
    plot_tempo_scatter([t["true_bpm"] for t in res["tracks"]], [t["predicted_bpm"] for t in res["tracks"]],
                       out / "tempo_scatter.png", f"{run.arch} on {split} ({len(res['tracks'])} tracks)")
    hist = run.path / HISTORY
    history = read_csv(hist) if hist.is_file() else []
    if history:
        plot_history(history, out / "curves.png", f"{run.arch} training curves")
    write_json_atomic(out / "metrics.json", res, only_if_changed=False)
    write_text_atomic(out / "report.md", tempo_report(res), only_if_changed=False)
    return res


def tempo_report(res: dict) -> str:
    """``report.md`` of :func:`evaluate_tempo`'s figures: a Markdown table at window and track
    level, and the scatter plot."""
    def f(x, pct=False):
        return "–" if x is None else (f"{100 * x:.1f} %" if pct else f"{x:.1f}")

    c, t = res["clip"], res["track"]
    L = [f"# {res['arch']} tempo on {res['split']}", "", f"- run: `{res['run']}`", f"- data: `{res['data']}`", "",
         "| figure | window level | track level (median of windows) |", "| --- | --- | --- |",
         f"| samples | {c['n']} | {t['n']} |",
         f"| mean absolute error (BPM) | {f(c['mae'])} | {f(t['mae'])} |",
         f"| median absolute error (BPM) | {f(c['median_ae'])} | {f(t['median_ae'])} |",
         f"| accuracy 1 (within 4 %) | {f(c['accuracy1'], True)} | {f(t['accuracy1'], True)} |",
         f"| accuracy 2 (x1, 2, 3, 1/2, 1/3 within 4 %) | {f(c['accuracy2'], True)} | {f(t['accuracy2'], True)} |",
         "", "![true vs predicted](tempo_scatter.png)", "",
         "Accuracy 1 and 2 as in Gouyon et al. (2006), IEEE TASLP 14(5).", ""]
    return "\n".join(L)


def format_tempo(res: dict) -> str:
    """The tempo figures as a text table (window and track level)."""
    c, t = res["clip"], res["track"]

    def g(x, pct=False):
        return "    –" if x is None else (f"{100 * x:7.1f}%" if pct else f"{x:8.1f}")

    return "\n".join([f"{'':22s} {'window':>8s} {'track':>8s}",
                      f"{'MAE (BPM)':22s} {g(c['mae'])} {g(t['mae'])}",
                      f"{'median AE (BPM)':22s} {g(c['median_ae'])} {g(t['median_ae'])}",
                      f"{'accuracy 1 (4 %)':22s} {g(c['accuracy1'], True)} {g(t['accuracy1'], True)}",
                      f"{'accuracy 2 (octaves)':22s} {g(c['accuracy2'], True)} {g(t['accuracy2'], True)}",
                      f"(n = {c['n']} windows, {t['n']} tracks)"])
