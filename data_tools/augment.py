"""Offline augmentations: waveform (audiomentations) and SpecAugment masks on mel dB.

Each augmentation variant is written as its own feature file and manifest row. Defaults
follow the studies: time stretch by 1.25 and 0.85, pitch shift by +2 and -1 semitones,
one frequency mask of up to F=30 mel bands and one time mask of up to T=40 frames
(Park et al., 2019, "SpecAugment", Interspeech).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import numpy as np

from genrekit.data_tools.errors import DataError

AUGMENTATIONS = ("stretch", "pitch", "freqmask", "timemask")


@dataclass(frozen=True)
class Variant:
    name: str  # "original", "stretch_x1.25", "pitch_+2", "freqmask", ...
    family: str  # "original" | one of AUGMENTATIONS
    value: float = 0.0


@dataclass(frozen=True)
class AugmentConfig:
    augmentations: tuple[str, ...] = AUGMENTATIONS
    stretch_rates: tuple[float, ...] = (1.25, 0.85)
    pitch_semitones: tuple[float, ...] = (2.0, -1.0)
    freq_mask_bands: int = 30  # F: a mask covers 0..F mel bands
    time_mask_frames: int = 40  # T: a mask covers 0..T frames
    masks: int = 1  # masks of each kind per variant

    def __post_init__(self):
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
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def variants(self) -> list[Variant]:
        """All variants of a training track, the un-augmented original first."""
        out = [Variant("original", "original")]
        for aug in self.augmentations:
            if aug == "stretch":
                out += [Variant(f"stretch_x{r:g}", "stretch", r) for r in self.stretch_rates]
            elif aug == "pitch":
                out += [Variant(f"pitch_{s:+g}", "pitch", s) for s in self.pitch_semitones]
            else:
                out.append(Variant(aug, aug))
        return out


def variant_rng(seed: int, track_id: str, variant: str) -> np.random.Generator:
    """A generator that depends only on (seed, track, variant), not on worker scheduling."""
    digest = hashlib.sha256(f"{seed}|{track_id}|{variant}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def apply_waveform(y: np.ndarray, sr: int, variant: Variant) -> np.ndarray:
    """Apply a waveform variant with audiomentations (fixed parameters, p=1)."""
    if variant.family in ("original", "freqmask", "timemask"):
        return y
    import audiomentations as am

    if variant.family == "stretch":
        t = am.TimeStretch(min_rate=variant.value, max_rate=variant.value,
                           leave_length_unchanged=False, p=1.0)
    elif variant.family == "pitch":
        t = am.PitchShift(min_semitones=variant.value, max_semitones=variant.value, p=1.0)
    else:  # pragma: no cover - guarded by AugmentConfig
        raise DataError(f"unknown waveform augmentation {variant.family}")
    return np.ascontiguousarray(t(samples=y, sample_rate=sr), dtype=np.float32)


def spec_transform_for(variant: Variant, cfg: AugmentConfig):
    """The SpecAugment mask for a variant, as ``f(db, rng) -> db`` (None for other variants)."""
    if variant.family == "freqmask":
        return lambda db, rng: mask(db, rng, axis=0, max_width=cfg.freq_mask_bands, count=cfg.masks)
    if variant.family == "timemask":
        return lambda db, rng: mask(db, rng, axis=1, max_width=cfg.time_mask_frames, count=cfg.masks)
    return None


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
