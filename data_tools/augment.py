"""Offline augmentations: waveform (audiomentations) and SpecAugment masks on mel dB.

Each augmentation variant is written as its own feature file and manifest row. Defaults
follow the studies: time stretch by 1.25 and 0.85, pitch shift by +2 and -1 semitones,
one frequency mask of up to F=30 mel bands and one time mask of up to T=40 frames
(Park et al., 2019, "SpecAugment", Interspeech).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from genrekit.data_tools.errors import DataError, FeatureError
from genrekit.data_tools.features import (
    Segment,
    finite_spectrogram,
    frame_windows,
    get_kind,
    segment_starts,
)

VARIANT_SOURCES = ("stft", "waveform")


@dataclass(frozen=True)
class Variant:
    """One variant of a training track: its name, its family (``"original"`` or an
    augmentation) and the family's value (a stretch rate, a pitch shift in semitones)."""
    name: str  # "original", "stretch_x1.25", "pitch_+2", "freqmask", ...
    family: str  # "original" | one of AUGMENTATIONS
    value: float = 0.0


ORIGINAL = Variant("original", "original")


def _time_stretch(y: np.ndarray, sr: int, rate: float) -> np.ndarray:
    import audiomentations as am

    stretch = am.TimeStretch(min_rate=rate, max_rate=rate, leave_length_unchanged=False, p=1.0)
    return stretch(samples=y, sample_rate=sr)


def _pitch_shift(y: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    import audiomentations as am

    shift = am.PitchShift(min_semitones=semitones, max_semitones=semitones, p=1.0)
    return shift(samples=y, sample_rate=sr)


@dataclass(frozen=True)
class Family:
    """One augmentation family: the variants it makes and how each is made.

    ``values`` (a function of the :class:`AugmentConfig`) gives one variant per value, named by
    ``label``; None gives one variant named after the family. A family changes either the
    waveform (``waveform(y, sr, value)`` with audiomentations, and ``factors(value)``: the
    (time rate, frequency ratio) by which augment's fast path reads the same variant from the
    original's STFT) or the spectrogram (``mask``: the axis, 0 = bands and 1 = frames, and the
    config's largest mask width)."""

    name: str
    values: Callable[[AugmentConfig], tuple[float, ...]] | None = None
    label: Callable[[float], str] | None = None
    waveform: Callable[[np.ndarray, int, float], np.ndarray] | None = None
    factors: Callable[[float], tuple[float, float]] | None = None
    mask: tuple[int, Callable[[AugmentConfig], int]] | None = None

    def variants(self, cfg: AugmentConfig) -> list[Variant]:
        """This family's variants under ``cfg``."""
        if self.values is None:
            return [Variant(self.name, self.name)]
        return [Variant(self.label(v), self.name, v) for v in self.values(cfg)]


# a stretch by r plays r times faster at the same pitch; a pitch shift by s semitones multiplies
# every frequency by 2 ** (s / 12)
FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("stretch", lambda c: c.stretch_rates, lambda r: f"stretch_x{r:g}", _time_stretch,
           factors=lambda r: (float(r), 1.0)),
    Family("pitch", lambda c: c.pitch_semitones, lambda s: f"pitch_{s:+g}", _pitch_shift,
           factors=lambda s: (1.0, float(2.0 ** (s / 12.0)))),
    Family("freqmask", mask=(0, lambda c: c.freq_mask_bands)),
    Family("timemask", mask=(1, lambda c: c.time_mask_frames)),
]}
AUGMENTATIONS = tuple(FAMILIES)
_UNCHANGED = Family("original")  # the original: no change


def family_of(variant: Variant) -> Family:
    """The :class:`Family` of a variant (the original's changes nothing)."""
    return FAMILIES.get(variant.family, _UNCHANGED)


@dataclass(frozen=True)
class AugmentConfig:
    """The training split's augmentations and their settings, checked when made."""
    augmentations: tuple[str, ...] = AUGMENTATIONS
    stretch_rates: tuple[float, ...] = (1.25, 0.85)
    pitch_semitones: tuple[float, ...] = (2.0, -1.0)
    freq_mask_bands: int = 30  # F: a mask covers 0..F mel bands
    time_mask_frames: int = 40  # T: a mask covers 0..T frames
    masks: int = 1  # masks of each kind per variant
    # where stretch / pitch variants of the mel-family kinds come from: "stft" = read from the
    # original's magnitude STFT (phase-vocoder magnitudes, see below), "waveform" = a waveform per
    # variant from audiomentations (signalsmith), as genrekit did before; saved with the folder's
    # settings, so a folder made one way is never resumed the other way
    variant_source: str = "stft"

    def __post_init__(self):
        if self.variant_source not in VARIANT_SOURCES:
            raise DataError(f"unknown variant source {self.variant_source!r} (known: {', '.join(VARIANT_SOURCES)})")
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown:
            raise DataError(f"unknown augmentation(s) {', '.join(unknown)} "
                            f"(known: {', '.join(AUGMENTATIONS)}, or none)")
        # the ranges audiomentations accepts, checked here so that a bad value is refused before
        # any work starts (not by the first training track, after --out was filled)
        bad = [r for r in self.stretch_rates if not 0.1 <= r <= 10]  # NaN too
        if bad:
            raise DataError(f"time-stretch rate(s) {', '.join(f'{r:g}' for r in bad)} out of range "
                            "(0.1 to 10)")
        bad = [s for s in self.pitch_semitones if not -24 <= s <= 24]
        if bad:
            raise DataError(f"pitch shift(s) {', '.join(f'{s:g}' for s in bad)} out of range "
                            "(-24 to 24 semitones)")
        if "stretch" in self.augmentations and not self.stretch_rates:
            raise DataError("stretch augmentation needs at least one --stretch-rates value")
        if "pitch" in self.augmentations and not self.pitch_semitones:
            raise DataError("pitch augmentation needs at least one --pitch-semitones value")
        if self.freq_mask_bands < 0 or self.time_mask_frames < 0 or self.masks < 0:
            raise DataError("mask sizes and counts must be non-negative")
        if self.masks > 100:
            raise DataError(f"--masks {self.masks} is above 100")

    def to_dict(self) -> dict:
        """The settings as JSON values (tuples as lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        """The config of a :meth:`to_dict` mapping.

        >>> AugmentConfig.from_dict(AugmentConfig().to_dict()) == AugmentConfig()
        True"""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def variants(self) -> list[Variant]:
        """All variants of a training track, the un-augmented original first."""
        out = [ORIGINAL]
        for aug in self.augmentations:
            out += FAMILIES[aug].variants(self)
        return out


def variant_rng(seed: int, track_id: str, variant: str) -> np.random.Generator:
    """A generator that depends only on (seed, track, variant), not on worker scheduling."""
    digest = hashlib.sha256(f"{seed}|{track_id}|{variant}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def apply_waveform(y: np.ndarray, sr: int, variant: Variant) -> np.ndarray:
    """Apply a waveform variant with audiomentations (fixed parameters, p=1); a variant that
    does not change the waveform (the original, a mask) gives ``y``."""
    change = family_of(variant).waveform
    if change is None:
        return y
    return np.ascontiguousarray(change(y, sr, variant.value), dtype=np.float32)


def spec_transform_for(variant: Variant, cfg: AugmentConfig):
    """The SpecAugment mask for a variant, as ``f(db, rng) -> db`` (None for other variants)."""
    m = family_of(variant).mask
    if m is None:
        return None
    axis, width = m[0], m[1](cfg)
    return lambda db, rng: mask(db, rng, axis=axis, max_width=width, count=cfg.masks)


def mask(db: np.ndarray, rng: np.random.Generator, axis: int, max_width: int, count: int = 1) -> np.ndarray:
    """SpecAugment mask: ``count`` bands of width uniform in [1, max_width] along ``axis``
    (0 = mel bands, 1 = frames) set to the spectrogram's mean. (The paper draws widths
    from [0, F]; a zero-width mask would only duplicate the original, so 1 is the minimum.)"""
    out = db.copy()
    size = out.shape[axis]
    fill = float(out.mean())
    for _ in range(count):
        if max_width <= 0:
            continue
        width = int(rng.integers(1, min(max_width, size) + 1))
        start = int(rng.integers(0, size - width + 1))
        if axis == 0:
            out[start:start + width, :] = fill
        else:
            out[:, start:start + width] = fill
    return out


# -- variants rendered from the original's spectrogram -------------------------------------
#
# A phase vocoder stretches a clip by reading its STFT at fractional frame positions (frame j
# of the stretched clip is frame j * rate of the original), interpolating the magnitudes of the
# two nearest frames linearly and accumulating the phase; a pitch shift is that stretch by
# 1 / ratio followed by resampling by ratio, which maps frequency f to f * ratio at the same
# time position. A kind made from the mel power spectrogram (one with a FeatureKind.spectral:
# mel, MFCC, melspec, musicnn) only keeps the magnitudes, so the variants of such a kind are
# read directly from the original's magnitude STFT (computed once per clip) instead of
# resynthesising a waveform per variant and analysing it again: the
# magnitudes a phase vocoder gives, without its resynthesis. A pure tone shifted by s semitones
# peaks at f * 2 ** (s / 12) with the same amplitude; a clip stretched by r has its tempo
# multiplied by r (tests/test_augment_spectral.py checks both, and the closeness to the
# waveform stretch of audiomentations on a real clip).

SPECTRAL_MAX_BYTES = 1 << 30  # a clip whose magnitude STFT would need more takes the waveform path
_CHUNK_FRAMES = 4096  # frames computed at a time (95 s at hop 512): bounded working memory


def time_freq_factors(variant: Variant) -> tuple[float, float]:
    """(time rate, frequency ratio) of a variant (see :data:`FAMILIES`); (1, 1) for a variant
    that is not a time-frequency change."""
    factors = family_of(variant).factors
    return (1.0, 1.0) if factors is None else factors(variant.value)


def stretched_length(n_samples: int, rate: float) -> int:
    """Samples of a clip of ``n_samples`` stretched by ``rate`` (as audiomentations gives)."""
    return max(1, int(n_samples / rate))


def magnitude_stft_bytes(n_samples: int, n_fft: int, hop_length: int) -> int:
    """Bytes of :func:`magnitude_stft`'s float32 array for ``n_samples`` samples.

    >>> magnitude_stft_bytes(22050, 2048, 512)
    180400"""
    return (1 + n_samples // hop_length) * (n_fft // 2 + 1) * 4


def magnitude_stft(y: np.ndarray, n_fft: int, hop_length: int) -> np.ndarray:
    """|STFT| (n_fft // 2 + 1, 1 + len(y) // hop_length) float32: Hann window, frames centred
    on multiples of ``hop_length`` with zeros beyond both ends (librosa's ``center=True``),
    computed ``_CHUNK_FRAMES`` frames at a time so that no whole-clip complex array is held."""
    import librosa

    y = np.asarray(y, dtype=np.float32)
    n_frames = 1 + len(y) // hop_length
    half = n_fft // 2
    padded = np.pad(y, (half, half))
    out = np.empty((n_fft // 2 + 1, n_frames), dtype=np.float32)
    for a in range(0, n_frames, _CHUNK_FRAMES):
        b = min(n_frames, a + _CHUNK_FRAMES)
        seg = padded[a * hop_length:(b - 1) * hop_length + n_fft]
        out[:, a:b] = np.abs(librosa.stft(seg, n_fft=n_fft, hop_length=hop_length, center=False))
    return out


def variant_magnitude(mag: np.ndarray, frame_pos: np.ndarray, ratio: float = 1.0) -> np.ndarray:
    """Magnitudes of a stretched / pitch-shifted clip read from the original's ``mag``
    (freq, frames): column j is the original at fractional frame ``frame_pos[j]`` (linear
    interpolation, as the phase vocoder), bin k the original at bin k / ``ratio`` (zero above the
    original's top bin). A NaN position is silence (constant padding)."""
    n_freq, n_frames = mag.shape
    pos = np.clip(np.nan_to_num(frame_pos, nan=0.0), 0.0, n_frames - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_frames - 1)
    w = (pos - lo).astype(np.float32)
    if not w.any():  # whole frames (a pitch shift): nothing to interpolate in time
        out = mag if np.array_equal(lo, np.arange(n_frames)) else mag[:, lo]
    else:
        out = np.take(mag, lo, axis=1)
        out *= 1.0 - w
        upper = np.take(mag, hi, axis=1)
        upper *= w
        out += upper
    if ratio != 1.0:
        src = np.arange(n_freq) / ratio
        inside = src <= n_freq - 1
        k0 = np.minimum(np.floor(src).astype(np.intp), n_freq - 2)
        k0[~inside] = 0
        k1 = k0 + 1
        wk = (src - k0).astype(np.float32)[:, None]
        shifted = out[k0] * (1.0 - wk) + out[k1] * wk
        shifted[~inside] = 0.0
        out = shifted
    silent = np.isnan(frame_pos)
    if silent.any():
        out = out.copy() if out is mag else out
        out[:, silent] = 0.0
    return out.astype(np.float32, copy=False)


def _mel_basis(cfg) -> np.ndarray:
    import librosa

    key = (cfg.sr, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    if key not in _MEL_BASES:
        _MEL_BASES[key] = librosa.filters.mel(sr=cfg.sr, n_fft=cfg.n_fft, n_mels=cfg.n_mels,
                                              fmin=cfg.fmin, fmax=cfg.fmax)
    return _MEL_BASES[key]


_MEL_BASES: dict = {}


def variant_mel_power(mag: np.ndarray, frame_pos: np.ndarray, ratio: float, cfg) -> np.ndarray:
    """Mel power (n_mels, len(frame_pos)) of a variant, ``_CHUNK_FRAMES`` frames at a time."""
    fb = _mel_basis(cfg)
    out = np.empty((fb.shape[0], len(frame_pos)), dtype=np.float32)
    for a in range(0, len(frame_pos), _CHUNK_FRAMES):
        m = variant_magnitude(mag, frame_pos[a:a + _CHUNK_FRAMES], ratio)
        out[:, a:a + _CHUNK_FRAMES] = fb @ (m * m)
    return out


def variant_clip_mel_power(mag: np.ndarray, n_samples: int, cfg, variant: Variant) -> np.ndarray:
    """Mel power (n_mels, frames) of a whole stretched / pitch-shifted clip, from the original
    clip's magnitude STFT ``mag`` (the clip had ``n_samples``): frame j of the variant is frame
    j * rate of the original, bin k the original's bin k / ratio."""
    rate, ratio = time_freq_factors(variant)
    pos = np.arange(1 + stretched_length(n_samples, rate) // cfg.hop_length) * rate
    return variant_mel_power(mag, pos, ratio, cfg)


def spectral_variant(mag: np.ndarray, n_samples: int, cfg, kind: str, variant: Variant):
    """One kind's features of a stretch / pitch variant, from the original clip's magnitude
    STFT ``mag`` (:func:`magnitude_stft` with ``cfg.n_fft``/``cfg.hop_length``; the clip had
    ``n_samples``): ``[(segment, feature), ...]`` with the segments, shapes and dtypes of
    :func:`~genrekit.data_tools.features.extract` on the variant's waveform. The kind must be
    made from the mel power spectrogram (:attr:`FeatureKind.spectral`)."""
    path = get_kind(kind).spectral
    if path is None:
        raise FeatureError(f"{kind} variants are not rendered from the spectrogram")
    rate, ratio = time_freq_factors(variant)
    w = cfg.windows(kind)
    with np.errstate(over="ignore", invalid="ignore"):
        if not path.per_segment:  # the whole clip's spectrogram cut into frame windows
            power = variant_clip_mel_power(mag, n_samples, cfg, variant)
            spec = finite_spectrogram(path.from_power(power, cfg))
            return frame_windows(spec, cfg, w.frames, w.hop_frames)
        n_var = stretched_length(n_samples, rate)  # samples of the variant's waveform
        hop, seg_len = cfg.hop_length, cfg.segment_samples(kind)
        seg_hop = int(round(w.hop_seconds * cfg.sr)) if w.hop_seconds else None
        empty = np.zeros(0, dtype=np.float32)
        out = []
        for i, start in enumerate(segment_starts(n_var, seg_len, seg_hop, w.count)):
            # frame j of the segment is centred on sample start + j * hop of the variant; past the
            # variant's end the segment is filled as extract fills it (wrap, or silence)
            p = start + np.arange(1 + seg_len // hop, dtype=np.float64) * hop
            short = max(0, seg_len - (n_var - start))
            if cfg.pad_mode == "wrap":
                p = np.mod(p, n_var)
            else:
                p[p >= n_var] = np.nan
            power = variant_mel_power(mag, p * rate / hop, ratio, cfg)
            spec = finite_spectrogram(path.from_power(power, cfg))
            seg = Segment(index=i, start_s=start / cfg.sr, padded_s=short / cfg.sr, audio=empty)
            out.append((seg, path.to_feature(spec, cfg)))
        return out
