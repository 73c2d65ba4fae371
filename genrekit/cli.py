"""The ``genrekit`` command line.

Every user-facing failure is a one-line ``genrekit: error: ...`` on stderr with exit code 2;
heavy libraries (TensorFlow) are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.abc
import importlib.util
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

from genrekit import __version__, progress
from genrekit.adapt import adapt, format_result, format_suggestions, suggest
from genrekit.cv import cross_validate, format_cv
from genrekit.data_tools.audio import silenced_stderr, stderr_line_guard
from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.features import (
    KINDS,
    MAX_N_FFT,
    MAX_N_MELS,
    MAX_SEGMENT_SECONDS,
    MAX_SR,
    default_kinds,
    feature_config_for,
)
from genrekit.data_tools.pipeline import AugmentSettings, merge_shards, run_augment
from genrekit.data_tools.splits import ratio_numbers
from genrekit.demo import run_demo
from genrekit.embed import FORMATS as EMBED_FORMATS
from genrekit.embed import backbone_embedder, embed_files, run_embedder
from genrekit.errors import UserError
from genrekit.evaluate import compare, eval_dir, evaluate, evaluate_folder, format_metrics
from genrekit.evaluation.gan_quality import format_quality
from genrekit.export import FORMATS as EXPORT_FORMATS
from genrekit.export import SUFFIX_FORMATS, export, export_bundle
from genrekit.gan import gan_generate, gan_train
from genrekit.models.registry import (  # no TensorFlow
    DEFAULT_ARCH,
    REGISTRY,
    arch_help,
    cv_arch_names,
    default_arch,
)
from genrekit.predict import CsvOut, check_csv_target, format_line, iter_predictions
from genrekit.train import train
from genrekit.training import PHASE_DEFAULTS, TrainOptions, format_summary, parse_hparams
from genrekit.weights import fetch


def _user_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [UserError, DataError]
    for mod, name in (("genrekit.models.errors", "ModelError"), ("genrekit.evaluation.errors", "EvaluationError")):
        if mod in sys.modules:
            errs.append(getattr(sys.modules[mod], name))
    return tuple(errs)


class _QuietImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import TensorFlow with file descriptor 2 pointed away: while its C++ libraries load they
    write about six lines of start-up log (oneDNN, CUDA, absl) straight to fd 2, before any
    setting such as ``TF_CPP_MIN_LOG_LEVEL`` is read. What they wrote is shown only if the
    import fails."""

    def __init__(self):
        self._loader = None

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self._loader is not None:
            return None
        sys.meta_path.remove(self)  # once: the real finders locate the package
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with tempfile.TemporaryFile() as log:
            try:
                # shared with the audio decoder threads, which may hold fd 2 silenced meanwhile
                with silenced_stderr(capture=log):
                    self._loader.exec_module(module)
            except BaseException:
                log.seek(0)
                with stderr_line_guard():
                    sys.stderr.write(log.read().decode("utf-8", "replace"))
                raise


def quiet_libraries() -> None:
    """Keep library chatter off stderr, so that a failing command prints exactly one line: the
    C++ log of TensorFlow (``TF_CPP_MIN_LOG_LEVEL=3``, and its start-up lines while it is
    imported), its and absl's Python loggers, and Python warnings. ``GENREKIT_DEBUG=1`` keeps
    them all."""
    if os.environ.get("GENREKIT_DEBUG"):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "absl", "keras", "h5py", "numba"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _in_range(kind, lo, hi=None, unit: str = ""):
    """An argparse type: a number of ``kind`` (int or float) from ``lo`` to ``hi`` (None: no upper
    bound here; the feature config's own cost limits still apply), refused by the parser in one
    line before any work."""
    what = "a whole number" if kind is int else "a number"
    def show(v):
        return str(v) if kind is int else f"{v:g}"

    span = f"from {show(lo)} to {show(hi)}" if hi is not None else f"of at least {show(lo)}"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not (lo <= v and (hi is None or v <= hi)):  # NaN fails too
            raise argparse.ArgumentTypeError(f"expected {what} {span}{unit}, got {text!r}")
        return v

    parse.__name__ = kind.__name__
    return parse


# Feature options a user would set (below these a feature is no longer a picture of music: --sr 1
# decodes nothing, --n-fft 1 has no frequency axis, --image-seconds 0.001 is a sliver of one
# STFT frame, --mfcc-hop 0.0001 asks for 300,000 sequences per 30 s track)
MIN_SR, MIN_N_FFT, MIN_N_MELS = 8000, 64, 8
MIN_IMAGE_SECONDS, MIN_IMAGE_HOP, MIN_MFCC_SECONDS, MIN_MFCC_HOP = 0.5, 0.1, 0.1, 0.01


def _probability(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}") from None
    if not 0 <= v <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return v


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 1/4, got {text!r}") from None
    return k, n


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(x) for x in text.lower().replace("×", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 256x256, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 256x256, got {text!r}")
    return parts[0], parts[1]


def _arch_type(names: list[str], refusal: str = ""):
    """--arch: one of ``names`` (registered architectures), refused by the parser before any work."""
    def arch(text: str) -> str:
        if text not in REGISTRY:
            raise argparse.ArgumentTypeError(f"unknown architecture {text!r} (known: {', '.join(names)})")
        if text not in names:
            raise argparse.ArgumentTypeError(f"{refusal}; {text} is not one (choose from {', '.join(names)})")
        return text

    return arch


def _add_progress_args(p: argparse.ArgumentParser, quiet: str | None = "no progress bars") -> None:
    """--progress / --no-progress (and --quiet): every command's progress bars, one switch
    (:mod:`genrekit.progress`)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal; never with --quiet)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help=quiet)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other genrekit error
        self.exit(2, f"genrekit: error: {message} (see `{self.prog} --help`)\n")


# -- augment ---------------------------------------------------------------------------------

def _augment_defaults():
    """The defaults of `genrekit augment`: those of the config dataclasses (one place)."""
    return AugmentSettings()


def _kind_note(key: str, default) -> str:
    """"; musicnn 16000" for every feature kind made for another value of a FeatureConfig field."""
    notes = [f"{k.name} {k.audio[key]}" for k in KINDS.values() if key in k.audio and k.audio[key] != default]
    return f"; {', '.join(notes)}" if notes else ""


def _add_feature_args(p: argparse.ArgumentParser, fc) -> None:
    g = p.add_argument_group("features (saved in feature_config.json)")
    for flag, key, typ, what in (
            ("--sr", "sr", _in_range(int, MIN_SR, MAX_SR, " Hz"), f"sample rate in Hz, {MIN_SR}-{MAX_SR}"),
            ("--n-fft", "n_fft", _in_range(int, MIN_N_FFT, MAX_N_FFT), f"FFT size in samples, {MIN_N_FFT}-{MAX_N_FFT}"),
            ("--hop-length", "hop_length", _in_range(int, 1), "hop in samples"),
            ("--n-mels", "n_mels", _in_range(int, MIN_N_MELS, MAX_N_MELS), f"mel bands, {MIN_N_MELS}-{MAX_N_MELS}")):
        g.add_argument(flag, type=typ, default=None, help=f"{what} (default {getattr(fc, key)}{_kind_note(key, getattr(fc, key))})")
    g.add_argument("--top-db", type=_positive_float, default=None, help=f"dB floor below the peak (default {fc.top_db:g})")
    g.add_argument("--image-size", type=_size, default=None, metavar="HxW",
                   help=f"PNG size (default {fc.image_height}x{fc.image_width})")
    g.add_argument("--image-seconds", type=_in_range(float, MIN_IMAGE_SECONDS, MAX_SEGMENT_SECONDS, " s"), default=None,
                   help=f"seconds per image, {MIN_IMAGE_SECONDS:g}-{MAX_SEGMENT_SECONDS:g} (default {fc.image_seconds:g})")
    g.add_argument("--image-hop", type=_in_range(float, MIN_IMAGE_HOP, MAX_SEGMENT_SECONDS, " s"), default=None,
                   help=f"seconds between images, at least {MIN_IMAGE_HOP:g} (default: no overlap)")
    g.add_argument("--image-segments", type=_in_range(int, 1, 10000), default=None, help="N evenly spaced images per track")
    g.add_argument("--n-mfcc", type=_in_range(int, 1), default=None, help=f"MFCC coefficients (default {fc.n_mfcc})")
    g.add_argument("--mfcc-seconds", type=_in_range(float, MIN_MFCC_SECONDS, unit=" s"), default=None,
                   help=f"seconds per MFCC sequence, at least {MIN_MFCC_SECONDS:g} (default {fc.mfcc_seconds:g})")
    g.add_argument("--mfcc-hop", type=_in_range(float, MIN_MFCC_HOP, MAX_SEGMENT_SECONDS, " s"), default=None,
                   help=f"seconds between MFCC sequences, at least {MIN_MFCC_HOP:g} (default {fc.mfcc_hop_seconds:g})")
    g.add_argument("--mfcc-segments", type=_in_range(int, 1, 10000), default=None,
                   help="N evenly spaced MFCC sequences per track")


def _feature_config(a, kinds):
    """The feature config of the options given: the dataclass defaults, the spectrogram settings
    of the chosen kinds (musicnn, melspec), then every option given."""
    height, width = a.image_size or (None, None)
    return feature_config_for(kinds, sr=a.sr, n_fft=a.n_fft, hop_length=a.hop_length, n_mels=a.n_mels,
                              top_db=a.top_db, image_height=height, image_width=width,
                              image_seconds=a.image_seconds, image_hop_seconds=a.image_hop,
                              image_segments=a.image_segments, n_mfcc=a.n_mfcc, mfcc_seconds=a.mfcc_seconds,
                              mfcc_hop_seconds=a.mfcc_hop, mfcc_segments=a.mfcc_segments)


def _features_help() -> str:
    """--features help, from the feature-kind registry and the models that read each kind."""
    parts = []
    for k in KINDS.values():
        archs = [s.name for s in REGISTRY.values() if s.feature == k.name]
        parts.append(f"{k.name} ({k.description}{'; for ' + ', '.join(archs) if archs else ''})")
    return (f"comma-separated feature kinds (default {','.join(default_kinds())}): " + "; ".join(parts)
            + f". A kind with spectrogram settings of its own ({', '.join(k.name for k in KINDS.values() if k.audio)}) "
              "sets the --sr/--n-fft/--hop-length/--n-mels defaults, e.g. --features melspec,tempogram")


def _default_augmentations(kinds) -> tuple[str, ...]:
    """--augment when none is given: every augmentation, except for musicnn features alone, the
    default recipe's: its logistic-regression head is fitted on the original recordings only,
    so variants would be files no model of that recipe reads (5,130 files for GTZAN where
    1,000 give the same model)."""
    if set(kinds) == {"musicnn"}:
        print("note: --features musicnn: no augmented variants (the default recipe, musicnn_lr, fits its head on "
              "the original recordings only); --augment stretch,pitch,... renders them, e.g. to fine-tune "
              "--arch musicnn or fit the head with --hparam variants=true", file=sys.stderr)
        return ()
    return _augment_defaults().augment.augmentations


def cmd_augment(a) -> int:
    if a.augment is None:
        a.augment = _default_augmentations(a.features)
    augs = () if a.augment in ((), ("none",)) else a.augment
    settings = AugmentSettings(
        features=_feature_config(a, a.features),
        augment=AugmentConfig(augmentations=augs, stretch_rates=a.stretch_rates,
                              pitch_semitones=a.pitch_semitones, freq_mask_bands=a.freq_mask,
                              time_mask_frames=a.time_mask, masks=a.masks),
        kinds=a.features, seed=a.seed, split=a.split, **({"ratios": ratio_numbers(a.ratios)} if a.ratios else {}),
        genres=a.genres or None, min_seconds=a.min_seconds, max_seconds=a.max_seconds)
    s = run_augment(a.data, a.out, settings, workers=a.workers, shard=a.shard,
                    progress=progress.enabled(), runner=a.runner, beam_options=a.beam_option or ())
    print(f"{s['ok']} tracks -> {s['files']} feature files in {s['out']} "
          f"({s['resumed']} already done, {s['skipped_bad']} skipped)")
    print(f"manifest: {s['manifest']}")
    if s["missing_on_disk"]:
        print(f"{s['missing_on_disk']} track(s) named in the split are not on disk (listed in the report)")
    return 0


def cmd_merge_shards(a) -> int:
    s = merge_shards(a.out)
    print(f"merged {s['shards']} shards, {s['files']} rows -> {s['manifest']}")
    return 0


# -- train -----------------------------------------------------------------------------------

def _add_regularisation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-aug", type=_names, default=None, metavar="LIST",
                   help="on-the-fly image augmentation for image models, training only: crop,affine,erase")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing e (default 0)")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup with Beta(ALPHA, ALPHA) mixing weights, e.g. 0.2 (default 0: off)")


def _train_defaults() -> dict:
    """``genrekit train``'s defaults are TrainOptions' own (one place for both the CLI and the API)."""
    return {f.name: f.default for f in dataclasses.fields(TrainOptions) if f.default is not dataclasses.MISSING}


def cmd_train(a) -> int:
    arch = a.arch or default_arch(a.task)
    opts = TrainOptions(data=a.data, arch=arch, phase=a.phase, out=a.out, from_run=a.from_run,
                        epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, optimizer=a.optimizer,
                        seed=a.seed, weights=a.weights, patience=a.patience,
                        hparams=parse_hparams(a.hparam), cache_base=not a.no_cache_base,
                        mixed_precision=a.mixed_precision, xla=a.xla, strategy=a.strategy,
                        deterministic=a.deterministic, verbose=0 if a.quiet else 2, synthetic=a.synthetic,
                        label_smoothing=a.label_smoothing, mixup=a.mixup, image_aug=a.image_aug or (),
                        task=a.task, tempo_file=a.tempo_file, genre_run=a.genre_run, tempo_run=a.tempo_run)
    print(format_summary(train(opts)))
    return 0


# -- predict / export ------------------------------------------------------------------------

def cmd_predict(a) -> int:
    reject = "per_genre" if a.reject_per_genre else a.reject
    preds = iter_predictions(a.files, a.model, top_k=a.top_k, reject=reject, reject_threshold=a.reject_threshold,
                             hop_s=a.hop, timeline_dir=a.timeline)
    if a.csv:
        check_csv_target(a.csv)
    results, failed, drawn = [], 0, 0
    with CsvOut(a.csv, preds.k) as out, progress.bar(len(preds), desc="predict", unit="file") as bar:
        for r in preds:  # each result as it comes: a table line, or one error line and the rest goes on
            bar.update(1)
            drawn += "timeline" in r
            out.write(r)
            if a.json:
                results.append(r)
            if "error" in r:
                failed += 1
                with stderr_line_guard():  # decoder threads may hold fd 2 silenced meanwhile
                    bar.write(f"genrekit: error: {r['file']}: {r['error']}", file=sys.stderr)
            elif not a.json:
                bar.write(format_line(r), file=sys.stdout)
    if a.json:
        print(json.dumps(results, indent=2))
    if a.csv:
        print(f"csv: {a.csv}", file=sys.stderr)
    if a.timeline:
        print(f"timelines: {drawn} file(s) -> {Path(a.timeline)}/ (<name>.timeline.csv: per-window genre "
              "probabilities, <name>.timeline.png: genre over time)", file=sys.stderr)
    return 2 if failed else 0


def cmd_adapt(a) -> int:
    print(format_result(adapt(a.model, a.out, data=a.data, labels=a.labels, seed=a.seed, weight=a.weight,
                              progress=progress.enabled())))
    return 0


def cmd_suggest(a) -> int:
    items = suggest(a.model, a.data, n=a.n, csv_path=a.csv, m3u_path=a.m3u, progress=progress.enabled())
    print(format_suggestions(items))
    for flag, path in (("csv", a.csv), ("m3u", a.m3u)):
        if path:
            print(f"{flag}: {path}", file=sys.stderr)
    if a.csv:
        print(f"fill in the genre column of {a.csv}, then: genrekit adapt --model {a.model} --labels {a.csv} "
              "--out NEW_RUN", file=sys.stderr)
    return 0


def cmd_serve(a) -> int:
    from genrekit.serve import check_bind, serve

    check_bind(a.host, a.token)  # before the run is loaded: a refused address costs nothing
    serve(a.model, host=a.host, port=a.port, token=a.token, max_upload_mb=a.max_upload_mb,
          max_seconds=a.max_seconds, library=a.library, workers=a.workers, queue=a.queue)
    return 0


def cmd_export(a) -> int:
    unknown = [f for f in a.format if f not in EXPORT_FORMATS]
    if unknown or not a.format:
        raise UserError(f"unknown export format {', '.join(unknown) or repr('')} (known: {', '.join(EXPORT_FORMATS)})")
    suffix = Path(a.out).suffix.lower() if a.out else ""
    if suffix in SUFFIX_FORMATS:  # --out model.onnx: the model file alone, as before bundles
        if list(a.format) != [SUFFIX_FORMATS[suffix]]:
            raise UserError(f"--out {a.out} names one {SUFFIX_FORMATS[suffix]} file; give --format "
                            f"{SUFFIX_FORMATS[suffix]} alone, or a folder --out for a bundle of several formats")
        print(f"{a.format[0]}: {export(a.model, a.format[0], a.out)} (model file only; a folder --out, or none, "
              "writes the bundle with labels, feature config, calibration and model card)")
        return 0
    out = export_bundle(a.model, a.format, a.out)
    print(f"bundle: {out}")
    for name in sorted(p.name for p in out.iterdir()):
        print(f"  {name}")
    return 0


def cmd_embed(a) -> int:
    if (a.model is None) == (a.backbone is None):
        raise UserError("give either --model RUN or --backbone musicnn")
    unknown = [f for f in a.format if f not in EMBED_FORMATS]
    if unknown or not a.format:
        raise UserError(f"unknown --format {', '.join(unknown) or repr('')} (known: {', '.join(EMBED_FORMATS)})")
    emb = run_embedder(a.model) if a.model else backbone_embedder(a.backbone, a.weights, a.layer)
    results = embed_files(a.files, a.out, emb, a.format, progress=progress.enabled())
    for r in results:
        if "error" in r:
            print(f"genrekit: error: {r['file']}: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['file']}: {r['windows']} windows x {r['dims']} -> {', '.join(r['outputs'])}")
    return 2 if any("error" in r for r in results) else 0


# -- evaluate / compare / cv -----------------------------------------------------------------

def cmd_evaluate(a) -> int:
    res = evaluate(a.model, a.data, split=a.split, out=a.out, batch_size=a.batch_size, tempo_file=a.tempo_file,
                   reject_threshold=a.reject_threshold)
    print(format_metrics(res))
    print(f"report ({a.split} split): {Path(a.out) if a.out else eval_dir(a.model, a.split)}/report.md")
    return 0


def cmd_compare(a) -> int:
    print(compare(a.runs, csv_path=a.csv, level=a.level, split=a.split), end="")
    if a.csv:
        print(f"\nCSV: {a.csv}")
    return 0


def cmd_cv(a) -> int:
    kw = {"epochs": a.epochs, "batch_size": a.batch_size, "patience": a.patience, "weights": a.weights,
          "hparams": parse_hparams(a.hparam), "label_smoothing": a.label_smoothing, "mixup": a.mixup,
          "image_aug": a.image_aug or (), "deterministic": a.deterministic}
    if a.phase:
        kw["phase"] = a.phase
    out = a.out or f"runs/cv-{a.arch}-{a.folds}fold"
    res = cross_validate(a.data, a.arch, a.folds, out, seed=a.seed, keep_augmented=not a.no_augmented,
                         train_kwargs=kw, log=progress.write)
    print(format_cv(res), end="")
    print(f"results: {Path(out) / 'cv.json'}, {Path(out) / 'cv.md'}")
    return 0


# -- spotify -----------------------------------------------------------------------------------

def cmd_fetch_spotify(a) -> int:
    from genrekit.data_tools.spotify import FetchOptions, fetch_spotify, format_fetch_report

    opts = FetchOptions(out=a.out, genres=list(a.genres), per_genre=a.per_genre,
                        playlists_per_genre=a.playlists, preview_sources=a.preview_source, market=a.market,
                        max_preview_bytes=int(a.max_preview_mb * 1_000_000),
                        preview_deadline_s=a.preview_deadline_seconds)
    rep = fetch_spotify(opts)
    print(format_fetch_report(rep, opts), end="")
    print(f"set: {a.out} (folder per genre), manifest: {Path(a.out) / 'spotify_manifest.csv'}")
    if not sum(rep.after.values()):
        print("genrekit: error: no track with audio was fetched", file=sys.stderr)
        return 2
    return 0


def cmd_eval_spotify(a) -> int:
    res = evaluate_folder(a.model, a.data, out=a.out, features_dir=a.features, workers=a.workers,
                          batch_size=a.batch_size, progress=progress.enabled(), reject_threshold=a.reject_threshold)
    print(format_metrics(res))
    out = Path(a.out) if a.out else Path(a.model) / f"eval-{Path(a.data).resolve().name}"
    print(f"report: {out / 'report.md'}")
    return 0


# -- gan ---------------------------------------------------------------------------------------

def cmd_gan_train(a) -> int:
    res = gan_train(a.data, out=a.out, epochs=a.epochs, batch_size=a.batch_size, latent_dim=a.latent_dim,
                    seed=a.seed, verbose=0 if a.quiet else 2)
    print(f"GAN run: {res['run']}")
    print(format_quality(res["quality"]), end="")
    return 0


def cmd_gan_generate(a) -> int:
    res = gan_generate(a.model, a.per_genre, a.out, seed=a.seed)
    print(f"{res['rows']} synthetic MFCC sequences (train split only) in {res['out']}")
    return 0


# -- weights -----------------------------------------------------------------------------------

def cmd_weights_fetch(a) -> int:
    dest = fetch(a.name, source=a.source)
    print(f"{a.name} weights verified and installed in {dest}")
    return 0


# -- demo ------------------------------------------------------------------------------------

def cmd_demo(a) -> int:
    if a.workers < 1:
        raise UserError(f"--workers must be at least 1, got {a.workers}")
    run_demo(a.out, workers=a.workers, quick=a.quick)
    return 0


# -- parser ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="genrekit", description="Music genre classification by transfer learning.")
    p.add_argument("--version", action="version", version=f"genrekit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    a = sub.add_parser("augment", help="validate audio, split by track, augment, write PNG/MFCC features",
                       description="Validate a folder-per-genre audio tree, split it by track, augment "
                                   "the training split and write mel PNGs and MFCC sequences with a manifest.")
    a.add_argument("--data", required=True, help="folder-per-genre audio tree (GTZAN layouts accepted)")
    a.add_argument("--out", required=True, help="feature folder to write (resumable)")
    a.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    d = _augment_defaults()
    a.add_argument("--seed", type=int, default=d.seed, help=f"seed for the split and augmentations (default {d.seed})")
    a.add_argument("--ratios", default=None,
                   help=f"train/valid/test ratios, stratified by genre (default {'/'.join(f'{r:g}' for r in d.ratios)})")
    a.add_argument("--split", default=None,
                   help="gtzan-filtered, a split CSV (track_id,split) or a folder of train/valid/test lists "
                        "(overrides --ratios)")
    a.add_argument("--genres", type=_names, default=None, help="only these genres (comma-separated)")
    a.add_argument("--features", type=_names, default=d.kinds, help=_features_help())
    a.add_argument("--augment", type=_names, default=None,
                   help=f"{','.join(d.augment.augmentations)} (default all; none with --features musicnn alone, "
                        "the default recipe, whose head reads the original recordings only) or none")
    a.add_argument("--stretch-rates", type=_floats, default=d.augment.stretch_rates,
                   help=f"default {','.join(f'{v:g}' for v in d.augment.stretch_rates)}")
    a.add_argument("--pitch-semitones", type=_floats, default=d.augment.pitch_semitones,
                   help=f"default {','.join(f'{v:g}' for v in d.augment.pitch_semitones)}")
    a.add_argument("--freq-mask", type=int, default=d.augment.freq_mask_bands,
                   help=f"max mel bands per frequency mask (F, default {d.augment.freq_mask_bands})")
    a.add_argument("--time-mask", type=int, default=d.augment.time_mask_frames,
                   help=f"max frames per time mask (T, default {d.augment.time_mask_frames})")
    a.add_argument("--masks", type=int, default=d.augment.masks,
                   help=f"masks of each kind per variant (default {d.augment.masks})")
    a.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help=f"skip clips shorter than this (default {d.min_seconds:g})")
    a.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help=f"skip files longer than this, checked from the header before decoding (default "
                        f"{d.max_seconds:g} = {d.max_seconds / 60:g} minutes; bounds the memory one file may take)")
    a.add_argument("--shard", type=_shard, default=None, metavar="K/N", help="process only shard K of N (then merge-shards)")
    a.add_argument("--runner", choices=("local", "beam"), default="local",
                   help="local processes (default) or an Apache Beam pipeline (from a genrekit checkout: pip install \".[beam]\"); "
                        "same files either way")
    a.add_argument("--beam-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a Beam pipeline option, repeatable, e.g. runner=FlinkRunner or direct_num_workers=2 "
                        "(with --runner beam; default: Beam's local runner with --workers processes)")
    _add_progress_args(a)
    _add_feature_args(a, d.features)
    a.set_defaults(func=cmd_augment)

    m = sub.add_parser("merge-shards", help="merge manifest.shard-K-of-N.csv files into manifest.csv")
    m.add_argument("out", help="feature folder holding every shard's output")
    m.set_defaults(func=cmd_merge_shards)

    t = sub.add_parser("train", help="train a model on a feature folder; writes a run folder",
                       description="Train an architecture on the manifest of a feature folder (train split; "
                                   "the valid split drives early stopping).")
    t.add_argument("--data", required=True, help="feature folder written by `genrekit augment`")
    t.add_argument("--arch", default=None, metavar="ARCH", choices=list(REGISTRY), type=_arch_type(list(REGISTRY)),
                   help=f"architecture, by the features it reads: {arch_help()}. Default {DEFAULT_ARCH} "
                        f"({REGISTRY[DEFAULT_ARCH].description}); tempocnn for --task tempo")
    td = _train_defaults()
    t.add_argument("--task", default=td["task"], choices=("genre", "tempo"),
                   help="genre classification (default) or tempo regression in BPM on tempogram features")
    t.add_argument("--tempo-file", default=None,
                   help="--task tempo: CSV track_id,bpm (default: GTZAN's ground-truth tempi, shipped)")
    t.add_argument("--genre-run", default=None, help="--arch fusion: the genre run whose conv embedding is reused")
    t.add_argument("--tempo-run", default=None, help="--arch fusion: the tempo run whose predictions are fed in")
    t.add_argument("--phase", default=None, help="scratch | transfer | finetune (default: transfer for "
                                                 "vgg16/mobilenet*, scratch otherwise)")
    t.add_argument("--from", dest="from_run", default=None, help="transfer run to fine-tune (--phase finetune)")
    t.add_argument("--out", default=None, help="run folder (default runs/<arch>-<phase>-<time>)")
    t.add_argument("--epochs", type=int, default=None, help="default " + ", ".join(
        f"{e} {ph}" for ph, (e, _) in PHASE_DEFAULTS.items()) + " (tempo: 60, fusion: 30)")
    t.add_argument("--batch-size", type=int, default=td["batch_size"], help=f"default {td['batch_size']}")
    t.add_argument("--lr", type=float, default=None, help="default " + ", ".join(
        f"{lr:g} {ph}" for ph, (_, lr) in PHASE_DEFAULTS.items()))
    t.add_argument("--optimizer", default=td["optimizer"], help=f"adam | rmsprop | sgd (default {td['optimizer']})")
    t.add_argument("--patience", type=int, default=td["patience"],
                   help=f"early-stopping patience on val loss (default {td['patience']})")
    t.add_argument("--weights", default=None,
                   help="ImageNet models: imagenet (default; downloads as Keras does) | none | PATH to a "
                        ".weights.h5 file. musicnn: msd (default) | mtt | none")
    t.add_argument("--hparam", action="append", metavar="KEY=VALUE",
                   help="builder hyper-parameter, e.g. --hparam dropout=0.5 --hparam dense_units=128")
    t.add_argument("--seed", type=int, default=td["seed"], help=f"default {td['seed']}")
    t.add_argument("--no-cache-base", action="store_true",
                   help="transfer phase: run the frozen base every epoch instead of once")
    t.add_argument("--mixed-precision", action="store_true", help="float16 compute on a GPU")
    t.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA compilation (default: on with a GPU)")
    t.add_argument("--strategy", default=td["strategy"], help="default | mirrored | multiworker (tf.distribute)")
    t.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism (slower)")
    _add_regularisation_args(t)
    t.add_argument("--synthetic", default=None,
                   help="a `genrekit gan generate` folder: its MFCC sequences join the training split only")
    _add_progress_args(t, "no per-epoch log and no progress bars")
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="top-k genres for audio files")
    pr.add_argument("files", nargs="+", help="audio files or folders (recursive; wav, au, mp3, flac, ogg)")
    pr.add_argument("--model", required=True, help="run folder")
    pr.add_argument("--top-k", type=_in_range(int, 1), default=3,
                    help="genres to show per file, at least 1 (default 3; at most the run's genres are shown)")
    pr.add_argument("--json", action="store_true", help="JSON instead of a table")
    pr.add_argument("--reject", action="store_true",
                    help="answer `unknown` when the run's rejection rule says so (chosen at training time, "
                         "threshold on the validation split): the embedding distance to the training tracks "
                         "for models with a track embedding (the default recipe), else the top calibrated "
                         "probability")
    pr.add_argument("--reject-per-genre", action="store_true",
                    help="like --reject, with the run's threshold for the track's top genre (each keeps 95%% of "
                         "that genre's held-out tracks accepted; the global one for a genre with fewer than 5)")
    pr.add_argument("--reject-threshold", type=_probability, default=None, metavar="P",
                    help="reject below this top probability instead of the run's rule (implies --reject)")
    pr.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                    help="hop between analysis windows (default: the run's own)")
    pr.add_argument("--timeline", default=None, metavar="DIR",
                    help="write each file's per-window genre probabilities (<name>.timeline.csv) and a plot of "
                         "genre over time (<name>.timeline.png) into DIR")
    pr.add_argument("--csv", default=None, metavar="FILE",
                    help="also write the results as a CSV table (written when every file is done)")
    _add_progress_args(pr, quiet=None)
    pr.set_defaults(func=cmd_predict)

    ad = sub.add_parser("adapt", help="teach a run your own music: refit its head with your labelled tracks "
                                      "(new genres welcome) into a new run folder")
    ad.add_argument("--model", required=True, help="run folder of the default recipe (`genrekit train`, no --arch)")
    src = ad.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", default=None, metavar="DIR", help="your labelled tracks, a folder per genre")
    src.add_argument("--labels", default=None, metavar="FILE.csv",
                     help="a path,genre CSV (e.g. `genrekit suggest --csv`, filled in); paths relative to its folder")
    ad.add_argument("--out", required=True, metavar="NEW_RUN", help="the new run folder (the old run is untouched)")
    ad.add_argument("--weight", type=_positive_float, default=None,
                    help="how many of the run's tracks one of yours weighs (default: as many as it takes for "
                         "your collection to weigh as much as the run's, 1 to 30)")
    ad.add_argument("--seed", type=int, default=0)
    _add_progress_args(ad, quiet=None)
    ad.set_defaults(func=cmd_adapt)

    sg = sub.add_parser("suggest", help="which of your unlabelled tracks to label first for `genrekit adapt`")
    sg.add_argument("--model", required=True, help="run folder of the default recipe")
    sg.add_argument("--data", required=True, metavar="DIR", help="your music (any folder, searched recursively)")
    sg.add_argument("-n", type=int, default=10, help="how many tracks to suggest (default 10)")
    sg.add_argument("--csv", default=None, metavar="FILE",
                    help="write path,genre,guess,probability,margin with an empty genre column to fill in (a new file)")
    sg.add_argument("--m3u", default=None, metavar="FILE", help="write the suggested tracks as a playlist (a new file)")
    _add_progress_args(sg, quiet=None)
    sg.set_defaults(func=cmd_suggest)

    sv = sub.add_parser("serve", help="a local web app and JSON API for a run (predict uploads, a live "
                                      "microphone stream, suggest/label/adapt over --library)")
    sv.add_argument("--model", required=True, help="run folder")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; any other needs --token)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    sv.add_argument("--token", default=os.environ.get("GENREKIT_SERVE_TOKEN"), metavar="T",
                    help="every /v1 request must send 'Authorization: Bearer T' (default: $GENREKIT_SERVE_TOKEN)")
    sv.add_argument("--max-upload-mb", type=_positive_float, default=50.0, metavar="MB",
                    help="largest request body (default 50; larger: 413)")
    sv.add_argument("--max-seconds", type=_positive_float, default=3600.0, metavar="S",
                    help="longest uploaded audio file (default 3600 s)")
    sv.add_argument("--library", default=None, metavar="DIR",
                    help="your music (read only): suggest tracks to label, label them, adapt the run from the page")
    sv.add_argument("--workers", type=int, default=2, help="analyses at once (default 2)")
    sv.add_argument("--queue", type=int, default=16,
                    help="requests that may wait for a worker (default 16; beyond: 503 with Retry-After)")
    sv.set_defaults(func=cmd_serve)

    ex = sub.add_parser("export", help="export a run as a bundle: model (.keras, SavedModel, TFLite, ONNX), labels, "
                                       "feature config, calibration, model card")
    ex.add_argument("--model", required=True, help="run folder")
    ex.add_argument("--format", type=_names, default=("keras",),
                    help="keras,saved_model,tflite,onnx (default keras); several go into one bundle")
    ex.add_argument("--out", default=None, help="bundle folder (default RUN/export/); a path ending in .keras, "
                                                ".tflite or .onnx writes that model file alone")
    ex.set_defaults(func=cmd_export)

    em = sub.add_parser("embed", help="per-window embeddings of audio files (.npy / CSV with start times) from a "
                                      "run or a pretrained backbone")
    em.add_argument("files", nargs="+", help="audio files or folders (recursive)")
    em.add_argument("--model", default=None, help="run folder whose backbone embeds the windows")
    em.add_argument("--backbone", default=None, help="a pretrained backbone instead of a run: musicnn")
    em.add_argument("--weights", default="msd", help="--backbone musicnn: msd, mtt or none (random; for tests)")
    em.add_argument("--layer", default="penultimate", help="--backbone musicnn: penultimate (200-d), pooled "
                                                         "(1,506-d) or taggram (50 tags)")
    em.add_argument("--format", type=_names, default=("npy", "csv"), help="npy,csv (default both)")
    em.add_argument("--out", required=True, help="folder for the embeddings (made new, or one embed made)")
    _add_progress_args(em, quiet=None)
    em.set_defaults(func=cmd_embed)

    ev = sub.add_parser("evaluate", help="figures, plots and report for a run on a split of a feature folder")
    ev.add_argument("--model", required=True, help="run folder")
    ev.add_argument("--data", required=True, help="feature folder made with the run's feature config")
    ev.add_argument("--split", default="test", help="split to evaluate (default test)")
    ev.add_argument("--out", default=None, help="output folder (default: RUN/eval/<split>/)")
    ev.add_argument("--batch-size", type=int, default=32)
    ev.add_argument("--tempo-file", default=None,
                    help="tempo runs: CSV track_id,bpm of true tempi (default: the one the run trained with)")
    ev.add_argument("--reject-threshold", type=_probability, default=None, metavar="P",
                    help="open-set figures at this top-probability threshold instead of the run's own")
    _add_progress_args(ev)
    ev.set_defaults(func=cmd_evaluate)

    co = sub.add_parser("compare", help="one table of several runs' settings and figures on one split")
    co.add_argument("runs", nargs="+", help="run folders")
    co.add_argument("--split", default="test",
                    help="the split whose figures to show (default test): from `genrekit evaluate --split` "
                         "(RUN/eval/<split>/), else from the end of training")
    co.add_argument("--csv", default=None, help="also write the table as CSV here")
    co.add_argument("--level", default="track", choices=("track", "clip"), help="figures at this level")
    co.set_defaults(func=cmd_compare)

    cv = sub.add_parser("cv", help="K-fold cross-validation by track (mean ± std of test figures)")
    cv.add_argument("--data", required=True, help="feature folder")
    cv_archs = cv_arch_names()
    cv.add_argument("--arch", default=DEFAULT_ARCH, metavar="ARCH", choices=cv_archs,
                    type=_arch_type(cv_archs, "cv cross-validates genre classifiers trained from features"),
                    help=f"architecture: {', '.join(cv_archs)} (default {DEFAULT_ARCH}, the default recipe, as for "
                         "train)")
    cv.add_argument("--folds", type=int, default=5)
    cv.add_argument("--out", default=None, help="folder for the folds (default runs/cv-<arch>-<K>fold)")
    cv.add_argument("--phase", default=None, help="scratch | transfer (default as for train)")
    cv.add_argument("--epochs", type=int, default=None)
    cv.add_argument("--batch-size", type=int, default=32)
    cv.add_argument("--patience", type=int, default=10)
    cv.add_argument("--weights", default=None, help="as for train")
    cv.add_argument("--hparam", action="append", metavar="KEY=VALUE")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--no-augmented", action="store_true", help="train on un-augmented rows only")
    cv.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism (slower)")
    _add_regularisation_args(cv)
    _add_progress_args(cv, "no progress bars (the per-fold lines stay)")
    cv.set_defaults(func=cmd_cv)

    fs = sub.add_parser("fetch-spotify", help="build an out-of-domain test set from Spotify playlists",
                        description="Search Spotify playlists per genre, download 30 s previews (Spotify's, else "
                                    "Deezer's or iTunes' by ISRC / artist and title), convert to 22,050 Hz mono "
                                    "WAV, deduplicate, drop cross-genre tracks. Needs SPOTIPY_CLIENT_ID and "
                                    "SPOTIPY_CLIENT_SECRET in the environment.")
    fs.add_argument("--out", required=True, help="folder for the set (resumable)")
    fs.add_argument("--genres", type=_names, required=True, help="comma-separated genre names to search for")
    fs.add_argument("--per-genre", type=int, default=50, help="tracks with audio per genre (default 50)")
    fs.add_argument("--playlists", type=int, default=5, help="playlists per genre (default 5)")
    fs.add_argument("--preview-source", type=_names, default=("spotify", "deezer", "itunes"),
                    help="where to look for a preview, in order (default spotify,deezer,itunes)")
    fs.add_argument("--market", default=None, help="ISO country code for Spotify (optional)")
    fs.add_argument("--max-preview-mb", type=_positive_float, default=20.0,
                    help="refuse a preview larger than this many megabytes (default 20)")
    fs.add_argument("--preview-deadline-seconds", type=_positive_float, default=60.0,
                    help="wall-clock limit for one preview download, redirects and retries included "
                         "(default 60); a slower preview is skipped and reported")
    fs.set_defaults(func=cmd_fetch_spotify)

    es = sub.add_parser("eval-spotify", help="score a run on a folder-per-genre audio set (e.g. from fetch-spotify)")
    es.add_argument("--model", required=True, help="run folder")
    es.add_argument("--data", required=True, help="folder-per-genre audio (wav/mp3/...)")
    es.add_argument("--out", default=None, help="output folder (default RUN/eval-<data folder name>)")
    es.add_argument("--features", default=None, help="where to render the features (default OUT/features)")
    es.add_argument("--workers", type=int, default=1)
    es.add_argument("--batch-size", type=int, default=32)
    _add_progress_args(es)
    es.add_argument("--reject-threshold", type=_probability, default=None, metavar="P",
                    help="open-set figures (an `unknown` folder's rejection rate) at this threshold instead of "
                         "the run's own")
    es.set_defaults(func=cmd_eval_spotify)

    gan = sub.add_parser("gan", help="conditional GAN for MFCC sequences (train, generate)")
    gsub = gan.add_subparsers(dest="gan_command", metavar="ACTION", parser_class=_Parser, required=True)
    gt = gsub.add_parser("train", help="train a conditional GAN on the training split's MFCC sequences")
    gt.add_argument("--data", required=True, help="feature folder with MFCC features")
    gt.add_argument("--out", default=None, help="GAN run folder (default runs/gan-train-<time>)")
    gt.add_argument("--epochs", type=int, default=100)
    gt.add_argument("--batch-size", type=int, default=64)
    gt.add_argument("--latent-dim", type=int, default=100)
    gt.add_argument("--seed", type=int, default=0)
    gt.add_argument("--quiet", action="store_true")
    gt.set_defaults(func=cmd_gan_train)
    gg = gsub.add_parser("generate", help="write synthetic sequences as a train-only feature folder")
    gg.add_argument("--model", required=True, help="GAN run folder")
    gg.add_argument("--per-genre", type=int, required=True)
    gg.add_argument("--out", required=True)
    gg.add_argument("--seed", type=int, default=0)
    gg.set_defaults(func=cmd_gan_generate)

    w = sub.add_parser("weights", help="install pretrained weights (musicnn)")
    wsub = w.add_subparsers(dest="weights_command", metavar="ACTION", parser_class=_Parser, required=True)
    wf = wsub.add_parser("fetch", help="download (pip) or unpack, verify and cache pretrained weights")
    wf.add_argument("name", help="musicnn")
    wf.add_argument("--from", dest="source", default=None,
                    help="offline: a musicnn-0.1.0 wheel file, or a folder holding MSD_musicnn/ etc.")
    wf.set_defaults(func=cmd_weights_fetch)

    d = sub.add_parser("demo", help="end-to-end run on a small synthetic set (no downloads)")
    d.add_argument("--out", default="genrekit-demo", help="folder for everything (default ./genrekit-demo)")
    d.add_argument("--workers", type=int, default=2, help="processes for augment (default 2)")
    d.add_argument("--quick", action="store_true", help="fewer tracks and epochs (a smoke test)")
    d.set_defaults(func=cmd_demo)
    return p


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    quiet_libraries()
    try:
        with progress.showing(progress.wanted(getattr(args, "progress", None), getattr(args, "quiet", False))):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("genrekit: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - every user-facing failure becomes one line
        if isinstance(exc, _user_errors()):
            print(f"genrekit: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            print(f"genrekit: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
            return 2
        if isinstance(exc, MemoryError):
            print("genrekit: error: out of memory (the input is too large for this machine)", file=sys.stderr)
            return 2
        if os.environ.get("GENREKIT_DEBUG"):
            raise
        print(f"genrekit: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set GENREKIT_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
