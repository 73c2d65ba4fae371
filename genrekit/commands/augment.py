"""``genrekit augment``: validate an audio tree, split it by track, augment the training split
and write the features with a manifest."""
from __future__ import annotations

import argparse
import sys

from genrekit import progress
from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.features import (
    KINDS,
    MAX_N_FFT,
    MAX_N_MELS,
    MAX_SEGMENT_SECONDS,
    MAX_SR,
    default_kinds,
    feature_config_for,
)
from genrekit.data_tools.pipeline import AugmentSettings, run_augment
from genrekit.data_tools.splits import ratio_numbers
from genrekit.models.registry import REGISTRY  # no TensorFlow
from genrekit.options import (
    MIN_IMAGE_HOP,
    MIN_IMAGE_SECONDS,
    MIN_MFCC_HOP,
    MIN_MFCC_SECONDS,
    MIN_N_FFT,
    MIN_N_MELS,
    MIN_SR,
    add_progress_args,
    floats,
    in_range,
    names,
    positive_float,
    shard,
    size,
)


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``augment`` parser; its defaults are those of :class:`AugmentSettings` (one place)."""
    a = sub.add_parser("augment",
                       help="validate audio, split by track, augment, write PNG/MFCC features",
                       description="Validate a folder-per-genre audio tree, split it by track, "
                                   "augment the training split and write mel PNGs and MFCC "
                                   "sequences with a manifest.")
    a.add_argument("--data", required=True,
                   help="folder-per-genre audio tree (GTZAN layouts accepted)")
    a.add_argument("--out", required=True, help="feature folder to write (resumable)")
    a.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    d = AugmentSettings()
    a.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed for the split and augmentations (default {d.seed})")
    a.add_argument("--ratios", default=None,
                   help="train/valid/test ratios, stratified by genre (default "
                        f"{'/'.join(f'{r:g}' for r in d.ratios)})")
    a.add_argument("--split", default=None,
                   help="gtzan-filtered, a split CSV (track_id,split) or a folder of "
                        "train/valid/test lists (overrides --ratios)")
    a.add_argument("--genres", type=names, default=None, help="only these genres (comma-separated)")
    a.add_argument("--features", type=names, default=d.kinds, help=features_help())
    _add_augmentation_args(a, d.augment)
    a.add_argument("--min-seconds", type=float, default=d.min_seconds,
                   help=f"skip clips shorter than this (default {d.min_seconds:g})")
    a.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="skip files longer than this, checked from the header before decoding "
                        f"(default {d.max_seconds:g} = {d.max_seconds / 60:g} minutes; bounds the "
                        "memory one file may take)")
    a.add_argument("--shard", type=shard, default=None, metavar="K/N",
                   help="process only shard K of N (then merge-shards)")
    a.add_argument("--runner", choices=("local", "beam"), default="local",
                   help="local processes (default) or an Apache Beam pipeline (from a genrekit "
                        "checkout: pip install \".[beam]\"); same files either way")
    a.add_argument("--beam-option", action="append", default=None, metavar="KEY=VALUE",
                   help="a Beam pipeline option, repeatable, e.g. runner=FlinkRunner or "
                        "direct_num_workers=2 (with --runner beam; default: Beam's local runner "
                        "with --workers processes)")
    add_progress_args(a)
    _add_feature_args(a, d.features)
    return a


def _add_augmentation_args(a: argparse.ArgumentParser, aug: AugmentConfig) -> None:
    a.add_argument("--augment", type=names, default=None,
                   help=f"{','.join(aug.augmentations)} (default all; none with --features musicnn "
                        "alone, the default recipe, whose head reads the original recordings only) "
                        "or none")
    a.add_argument("--stretch-rates", type=floats, default=aug.stretch_rates,
                   help=f"default {','.join(f'{v:g}' for v in aug.stretch_rates)}")
    a.add_argument("--pitch-semitones", type=floats, default=aug.pitch_semitones,
                   help=f"default {','.join(f'{v:g}' for v in aug.pitch_semitones)}")
    a.add_argument("--freq-mask", type=int, default=aug.freq_mask_bands,
                   help=f"max mel bands per frequency mask (F, default {aug.freq_mask_bands})")
    a.add_argument("--time-mask", type=int, default=aug.time_mask_frames,
                   help=f"max frames per time mask (T, default {aug.time_mask_frames})")
    a.add_argument("--masks", type=int, default=aug.masks,
                   help=f"masks of each kind per variant (default {aug.masks})")


def _kind_note(key: str, default) -> str:
    """"; musicnn 16000" for every feature kind made for another value of a FeatureConfig field."""
    notes = [f"{k.name} {k.audio[key]}" for k in KINDS.values()
             if key in k.audio and k.audio[key] != default]
    return f"; {', '.join(notes)}" if notes else ""


def _add_feature_args(p: argparse.ArgumentParser, fc) -> None:
    g = p.add_argument_group("features (saved in feature_config.json)")
    for flag, key, typ, what in (
            ("--sr", "sr", in_range(int, MIN_SR, MAX_SR, " Hz"),
             f"sample rate in Hz, {MIN_SR}-{MAX_SR}"),
            ("--n-fft", "n_fft", in_range(int, MIN_N_FFT, MAX_N_FFT),
             f"FFT size in samples, {MIN_N_FFT}-{MAX_N_FFT}"),
            ("--hop-length", "hop_length", in_range(int, 1), "hop in samples"),
            ("--n-mels", "n_mels", in_range(int, MIN_N_MELS, MAX_N_MELS),
             f"mel bands, {MIN_N_MELS}-{MAX_N_MELS}")):
        g.add_argument(flag, type=typ, default=None,
                       help=f"{what} (default {getattr(fc, key)}"
                            f"{_kind_note(key, getattr(fc, key))})")
    g.add_argument("--top-db", type=positive_float, default=None,
                   help=f"dB floor below the peak (default {fc.top_db:g})")
    g.add_argument("--image-size", type=size, default=None, metavar="HxW",
                   help=f"PNG size (default {fc.of('mel').height}x{fc.of('mel').width})")
    g.add_argument("--image-seconds",
                   type=in_range(float, MIN_IMAGE_SECONDS, MAX_SEGMENT_SECONDS, " s"), default=None,
                   help=f"seconds per image, {MIN_IMAGE_SECONDS:g}-{MAX_SEGMENT_SECONDS:g} "
                        f"(default {fc.of('mel').seconds:g})")
    g.add_argument("--image-hop", type=in_range(float, MIN_IMAGE_HOP, MAX_SEGMENT_SECONDS, " s"),
                   default=None,
                   help=f"seconds between images, at least {MIN_IMAGE_HOP:g} (default: no overlap)")
    g.add_argument("--image-segments", type=in_range(int, 1, 10000), default=None,
                   help="N evenly spaced images per track")
    g.add_argument("--n-mfcc", type=in_range(int, 1), default=None,
                   help=f"MFCC coefficients (default {fc.of('mfcc').n_mfcc})")
    g.add_argument("--mfcc-seconds", type=in_range(float, MIN_MFCC_SECONDS, unit=" s"),
                   default=None,
                   help=f"seconds per MFCC sequence, at least {MIN_MFCC_SECONDS:g} (default "
                        f"{fc.of('mfcc').seconds:g})")
    g.add_argument("--mfcc-hop", type=in_range(float, MIN_MFCC_HOP, MAX_SEGMENT_SECONDS, " s"),
                   default=None,
                   help=f"seconds between MFCC sequences, at least {MIN_MFCC_HOP:g} (default "
                        f"{fc.of('mfcc').hop_seconds:g})")
    g.add_argument("--mfcc-segments", type=in_range(int, 1, 10000), default=None,
                   help="N evenly spaced MFCC sequences per track")


def feature_config(a, kinds):
    """The feature config of the options given: the dataclass defaults, the spectrogram settings
    of the chosen kinds (musicnn, melspec), then every option given."""
    height, width = a.image_size or (None, None)
    return feature_config_for(kinds, sr=a.sr, n_fft=a.n_fft, hop_length=a.hop_length,
                              n_mels=a.n_mels, top_db=a.top_db, image_height=height,
                              image_width=width, image_seconds=a.image_seconds,
                              image_hop_seconds=a.image_hop, image_segments=a.image_segments,
                              n_mfcc=a.n_mfcc, mfcc_seconds=a.mfcc_seconds,
                              mfcc_hop_seconds=a.mfcc_hop, mfcc_segments=a.mfcc_segments)


def features_help() -> str:
    """--features help, from the feature-kind registry and the models that read each kind."""
    parts = []
    for k in KINDS.values():
        archs = [s.name for s in REGISTRY.values() if s.feature == k.name]
        parts.append(f"{k.name} ({k.description}{'; for ' + ', '.join(archs) if archs else ''})")
    return (f"comma-separated feature kinds (default {','.join(default_kinds())}): "
            + "; ".join(parts) + ". A kind with spectrogram settings of its own "
              f"({', '.join(k.name for k in KINDS.values() if k.audio)}) sets the "
              "--sr/--n-fft/--hop-length/--n-mels defaults, e.g. --features melspec,tempogram")


def default_augmentations(kinds) -> tuple[str, ...]:
    """--augment when none is given: every augmentation, except for musicnn features alone, the
    default recipe's: its logistic-regression head is fitted on the original recordings only,
    so variants would be files no model of that recipe reads."""
    if set(kinds) == {"musicnn"}:
        print("note: --features musicnn: no augmented variants (the default recipe, musicnn_lr, "
              "fits its head on the original recordings only); --augment stretch,pitch,... renders "
              "them, e.g. to fine-tune --arch musicnn or fit the head with --hparam variants=true",
              file=sys.stderr)
        return ()
    return AugmentSettings().augment.augmentations


def run(a) -> int:
    """Render the features; print what was done."""
    if a.augment is None:
        a.augment = default_augmentations(a.features)
    augs = () if a.augment in ((), ("none",)) else a.augment
    settings = AugmentSettings(
        features=feature_config(a, a.features),
        augment=AugmentConfig(augmentations=augs, stretch_rates=a.stretch_rates,
                              pitch_semitones=a.pitch_semitones, freq_mask_bands=a.freq_mask,
                              time_mask_frames=a.time_mask, masks=a.masks),
        kinds=a.features, seed=a.seed, split=a.split,
        **({"ratios": ratio_numbers(a.ratios)} if a.ratios else {}),
        genres=a.genres or None, min_seconds=a.min_seconds, max_seconds=a.max_seconds)
    s = run_augment(a.data, a.out, settings, workers=a.workers, shard=a.shard,
                    progress=progress.enabled(), runner=a.runner, beam_options=a.beam_option or ())
    print(f"{s.ok} tracks -> {s.files} feature files in {s.out} "
          f"({s.resumed} already done, {s.skipped_bad} skipped)")
    print(f"manifest: {s.manifest}")
    if s.missing_on_disk:
        print(f"{s.missing_on_disk} track(s) named in the split are not on disk (listed in the "
              "report)")
    return 0
