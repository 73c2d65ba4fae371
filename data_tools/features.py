"""The one feature path: waveform -> segments -> mel dB -> grayscale PNG image / MFCC sequence.

``augment``, ``predict``, ``evaluate`` and ``eval-spotify`` all call :func:`extract` with the
:class:`FeatureConfig` saved in the feature folder (``feature_config.json``) and copied into
every run folder, so features are never computed two ways. Each feature kind (mel, mfcc,
musicnn, melspec, tempogram) is one :class:`FeatureKind` in the registry at the end of this
module (:func:`get_kind`, :func:`register_kind`).

Units: ``sr`` in Hz, ``n_fft``/``hop_length`` in samples, ``*_seconds`` in seconds,
``top_db`` in dB below the segment's peak.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

import numpy as np

from genrekit.data_tools.errors import DataError, FeatureError
from genrekit.data_tools.fsio import loads_json, save_npy_atomic, save_png_atomic, write_json_atomic

# the input the musicnn checkpoints were trained on (Pons & Serra 2019): 16 kHz, 512-sample FFT,
# 256-sample hop, 96 mel bands, log10(10000 * mel + 1), 187-frame (3 s) windows
MUSICNN_FEATURES = {"sr": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 96}
# the compact CNN of the tempo study: 64 mel bands, 50 ms window, 25 ms hop at 22,050 Hz, 400 frames
MELSPEC_64X400_FEATURES = {"sr": 22050, "n_fft": 1102, "hop_length": 551, "n_mels": 64}
# "tempogram": the onset envelope of a 64-band mel spectrogram (n_fft = 4 x tempo_hop_length), its
# windowed autocorrelation (librosa's tempogram) resampled onto a log-spaced BPM axis, averaged over
# blocks of tempo_step_frames onset frames. On a log-BPM axis a change of tempo is a shift, which a
# convolution handles with the same weights at every tempo.
TEMPO_ONSET_MELS = 64
CONFIG_NAME = "feature_config.json"
# what one segment may cost: settings past these are refused up front, with one line, instead of
# asking for gigabytes per segment (--hop-length 1: 5 GiB per 30 s image; mfcc_seconds=1e7: 821 GiB)
MAX_SEGMENT_SECONDS = 600.0
MAX_SEGMENT_BYTES = 1 << 30  # working memory of one segment's spectrogram
MAX_SR = 192000
MAX_N_FFT = 1 << 16
MAX_N_MELS = 1024
MAX_IMAGE_SIDE = 4096
MAX_WINDOW_FRAMES = 100000


# -- settings ------------------------------------------------------------------------------
# A FeatureConfig is the spectrogram settings every kind shares (SHARED_SETTINGS) plus one small
# settings record per kind that has settings of its own (the kind declares it: FeatureKind.settings,
# its defaults). On disk (feature_config.json, a run's config.json) and on the command line the
# settings are flat names: a record's field under its kind's prefix ("image_" + "height" ->
# "image_height"), or the name in the field's metadata ("n_mfcc").


@dataclass(frozen=True)
class MelImageSettings:
    """The mel kind's images: ``height`` x ``width`` pixels per ``seconds`` of audio, a new one
    every ``hop_seconds`` (None: no overlap) or ``segments`` evenly spaced per track."""

    height: int = 256
    width: int = 256
    seconds: float = 30.0  # one 30 s image per GTZAN clip, as the MobileNet study
    hop_seconds: float | None = None  # None: no overlap
    segments: int | None = None  # N evenly spaced images per track instead of a hop


@dataclass(frozen=True)
class MfccSettings:
    """The mfcc kind's sequences: ``n_mfcc`` coefficients per frame over ``seconds`` of audio,
    a new one every ``hop_seconds`` (None: back to back) or ``segments`` evenly spaced."""

    n_mfcc: int = field(default=13, metadata={"flat": "n_mfcc"})
    seconds: float = 3.0
    hop_seconds: float | None = 1.5  # 50 % overlap
    segments: int | None = None


@dataclass(frozen=True)
class FrameWindowSettings:
    """Windows of ``frames`` spectrogram frames cut from a whole clip, a new one every
    ``hop_frames`` (None: back to back): musicnn, melspec."""

    frames: int
    hop_frames: int | None = None


@dataclass(frozen=True)
class TempogramSettings:
    """The tempogram kind (see :func:`tempogram`)."""

    hop_length: int = 256  # onset-envelope hop in samples (11.6 ms at 22,050 Hz)
    ac_frames: int = 384  # autocorrelation window in onset frames (4.5 s at hop 256)
    bins: int = 128  # log-spaced BPM bins ...
    bpm_min: float = 30.0  # ... from this tempo ...
    bpm_max: float = 480.0  # ... to this one (four octaves: harmonics help with octave errors)
    step_frames: int = 8  # onset frames averaged into one tempogram step (93 ms at hop 256)
    frames: int = 128  # tempogram window length in steps (11.9 s)
    hop_frames: int | None = 64  # steps between windows (None: back to back)


# the spectrogram settings every kind shares, with their defaults
SHARED_SETTINGS: Mapping[str, object] = MappingProxyType({
    "sr": 22050, "n_fft": 2048, "hop_length": 512, "n_mels": 128, "fmin": 0.0, "fmax": None,
    "top_db": 80.0,  # dB floor below each segment's peak
    "pad_mode": "wrap",  # how a clip shorter than a segment is filled: wrap | constant
})
# the order of feature_config.json's keys in to_dict() (the file itself is written sorted)
_KEY_ORDER = ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "image_height",
              "image_width", "image_seconds", "image_hop_seconds", "image_segments", "n_mfcc",
              "mfcc_seconds", "mfcc_hop_seconds", "mfcc_segments", "pad_mode")
_FLAT: dict[str, tuple[str, str]] = {}  # flat name -> (kind, field of its settings record)


@dataclass(frozen=True, init=False)
class FeatureConfig:
    """The feature settings of a feature folder or a run: the shared spectrogram settings
    (``sr``, ``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``, ``top_db``,
    ``pad_mode``) and each kind's own settings record (:meth:`of`).

    Built from flat names, as feature_config.json and the command line spell them:
    ``FeatureConfig(sr=16000, image_height=128)``; or with records:
    ``FeatureConfig(settings={"mel": MelImageSettings(height=128)})``. A flat name of a kind's
    record is read with :meth:`flat` (``cfg.flat("image_height")`` is ``cfg.of("mel").height``),
    and ``dataclasses.replace(cfg, image_height=64)`` changes it."""

    sr: int
    n_fft: int
    hop_length: int
    n_mels: int
    fmin: float
    fmax: float | None
    top_db: float
    pad_mode: str
    kind_settings: tuple[tuple[str, object], ...]  # (kind, record) where not the kind's defaults

    def __init__(self, *, settings: Mapping[str, object] | None = None,
                 kind_settings: tuple[tuple[str, object], ...] = (), **flat):
        shared = dict(SHARED_SETTINGS)
        # kind_settings: the field itself, as dataclasses.replace passes it back
        chosen = dict(kind_settings) | dict(settings or {})
        changes: dict[str, dict] = {}
        unknown = []
        for key, value in flat.items():
            if key in shared:
                shared[key] = value
            elif key in _FLAT:
                kind, attr = _FLAT[key]
                changes.setdefault(kind, {})[attr] = value
            else:
                unknown.append(key)
        unknown += [f"settings[{k!r}]" for k in chosen
                    if k not in KINDS or KINDS[k].settings is None]
        if unknown:
            raise TypeError("FeatureConfig() got unexpected keyword argument(s) "
                            + ", ".join(unknown))
        for kind, values in changes.items():
            chosen[kind] = dataclasses.replace(chosen.get(kind, get_kind(kind).settings), **values)
        for key, value in shared.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "kind_settings", tuple(
            (k.name, chosen[k.name]) for k in KINDS.values()
            if k.name in chosen and chosen[k.name] != k.settings))
        self._check()

    def of(self, kind: str):
        """The settings record of ``kind`` (its defaults where they were not changed)."""
        for name, record in self.kind_settings:
            if name == kind:
                return record
        return get_kind(kind).settings

    def with_settings(self, kind: str, **changes) -> FeatureConfig:
        """This config with fields of ``kind``'s settings record changed."""
        record = dataclasses.replace(self.of(kind), **changes)
        return FeatureConfig(settings=dict(self.kind_settings) | {kind: record},
                             **{key: getattr(self, key) for key in SHARED_SETTINGS})

    def flat(self, name: str):
        """The value of a flat setting name, as feature_config.json spells it.

        >>> FeatureConfig(image_height=128).flat("image_height")
        128"""
        if name in SHARED_SETTINGS:
            return getattr(self, name)
        if name not in _FLAT:
            raise KeyError(f"no feature setting {name!r}")
        kind, attr = _FLAT[name]
        return getattr(self.of(kind), attr)

    def _check(self):
        # the checks of every kind's settings in one place, so that the messages and their order
        # (several problems are reported in one line) stay as they were
        mel, mfcc, tempo = self.of("mel"), self.of("mfcc"), self.of("tempogram")
        problems = []
        if self.sr <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            problems.append("sr, n_fft, hop_length and n_mels must be positive")
        if mel.height < 8 or mel.width < 8:
            problems.append("image size must be at least 8x8")
        if mel.seconds <= 0 or mfcc.seconds <= 0:
            problems.append("segment lengths must be positive")
        for name, v in (("image_hop_seconds", mel.hop_seconds),
                        ("mfcc_hop_seconds", mfcc.hop_seconds)):
            if v is not None and v <= 0:
                problems.append(f"{name} must be positive")
        for name, v in (("image_segments", mel.segments), ("mfcc_segments", mfcc.segments)):
            if v is not None and v < 1:
                problems.append(f"{name} must be at least 1")
        if not 0 < self.top_db < float("inf"):  # NaN too
            problems.append("top_db must be positive")
        if self.pad_mode not in ("wrap", "constant"):
            problems.append("pad_mode must be wrap or constant")
        if mfcc.n_mfcc < 1 or mfcc.n_mfcc > self.n_mels:
            problems.append("n_mfcc must be between 1 and n_mels")
        if tempo.hop_length <= 0 or tempo.step_frames <= 0 or tempo.frames <= 0 \
                or tempo.bins < 2 or (tempo.hop_frames is not None and tempo.hop_frames <= 0):
            problems.append("tempo hop, step, frames and bins must be positive (at least 2 bins)")
        elif not 0 < tempo.bpm_min < tempo.bpm_max:
            problems.append("tempo BPM range must satisfy 0 < min < max")
        elif 60.0 * self.sr / (tempo.hop_length * tempo.bpm_min) >= tempo.ac_frames - 1:
            problems.append("tempo_ac_frames is too short for the slowest tempo of the BPM axis")
        if not problems:
            problems += self._cost_problems()
        if problems:
            raise DataError("bad feature settings: " + "; ".join(problems))

    def _cost_problems(self) -> list[str]:
        mel, mfcc = self.of("mel"), self.of("mfcc")
        p = []
        if self.sr > MAX_SR:
            p.append(f"sr {self.sr} Hz is above {MAX_SR}")
        if self.n_fft > MAX_N_FFT:
            p.append(f"n_fft {self.n_fft} is above {MAX_N_FFT}")
        if self.n_mels > MAX_N_MELS:
            p.append(f"n_mels {self.n_mels} is above {MAX_N_MELS}")
        if max(mel.height, mel.width) > MAX_IMAGE_SIDE:
            p.append(f"image size {mel.height}x{mel.width} is above {MAX_IMAGE_SIDE} a side")
        for name, v in (("image_seconds", mel.seconds), ("mfcc_seconds", mfcc.seconds),
                        ("image_hop_seconds", mel.hop_seconds),
                        ("mfcc_hop_seconds", mfcc.hop_seconds)):
            if v is not None and not v <= MAX_SEGMENT_SECONDS:  # NaN too
                p.append(f"{name} {v:g} is above {MAX_SEGMENT_SECONDS:g} s")
        for name, v in (("image_segments", mel.segments), ("mfcc_segments", mfcc.segments)):
            if v is not None and v > 10000:
                p.append(f"{name} {v} is above 10000")
        for name in ("musicnn_frames", "melspec_frames", "tempo_frames", "tempo_ac_frames"):
            if not 1 <= self.flat(name) <= MAX_WINDOW_FRAMES:
                p.append(f"{name} must be between 1 and {MAX_WINDOW_FRAMES}")
        # a segment holds at least one STFT frame
        for name, v in (("image_seconds", mel.seconds), ("mfcc_seconds", mfcc.seconds)):
            if v * self.sr < self.n_fft:
                p.append(f"{name} {v:g} s is shorter than one FFT window "
                         f"(n_fft {self.n_fft} samples = {self.n_fft / self.sr:.3g} s at {self.sr} Hz)")
        if p:
            return p
        for kind in ("mel", "mfcc"):
            need = self.segment_bytes(kind)
            if need > MAX_SEGMENT_BYTES:
                p.append(f"one {kind} segment would need {need / 2**30:.1f} GiB of memory "
                         f"(limit {MAX_SEGMENT_BYTES / 2**30:g} GiB): raise hop_length "
                         f"({self.hop_length}) or shorten the segment")
        return p

    def stft_bytes(self, seconds: float, n_fft: int | None = None, hop_length: int | None = None) -> int:
        """Working memory of the spectrogram of ``seconds`` of audio: complex STFT + power + mel."""
        n_fft = n_fft or self.n_fft
        hop = hop_length or self.hop_length
        frames = 1 + int(seconds * self.sr) // hop
        return frames * ((n_fft // 2 + 1) * 12 + self.n_mels * 8)

    def segment_bytes(self, kind: str) -> int:
        """Working memory of one mel or MFCC segment (the segment is padded to full length)."""
        mel = self.of("mel")
        return self.stft_bytes(self.seconds(kind)) + mel.height * mel.width * 8

    def clip_bytes(self, kind: str, clip_seconds: float) -> int:
        """Working memory of rendering ``kind`` from a clip of ``clip_seconds`` (see
        :attr:`FeatureKind.work_bytes`)."""
        return get_kind(kind).work_bytes(self, clip_seconds)

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The settings by flat name (what feature_config.json holds)."""
        d = {key: getattr(self, key) for key in SHARED_SETTINGS}
        for kind in KINDS.values():
            if kind.settings is not None:
                record = self.of(kind.name)
                d.update((key, getattr(record, attr)) for attr, key in kind.flat_names().items())
        first = [k for k in _KEY_ORDER if k in d]
        return {k: d[k] for k in first + [k for k in d if k not in _KEY_ORDER]}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        """The config of a mapping of flat names (:meth:`to_dict`); a name left out: its default."""
        unknown = set(d) - set(SHARED_SETTINGS) - set(_FLAT)
        if unknown:
            raise DataError(f"feature config has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**d)

    def fingerprint(self) -> str:
        """A short hash of :meth:`to_dict`: runs and feature folders made with the same
        features share it."""
        return fingerprint_of(self.to_dict())

    def save(self, folder) -> Path:
        """Write the config as ``feature_config.json`` in ``folder`` (atomically); returns its
        path."""
        path = Path(folder) / CONFIG_NAME
        write_json_atomic(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder_or_file) -> FeatureConfig:
        """The config saved in a feature folder (or in a ``feature_config.json`` given itself);
        one line when it is missing or unreadable."""
        p = Path(folder_or_file)
        if p.is_dir():
            p = p / CONFIG_NAME
        try:
            return cls.from_dict(loads_json(p.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise DataError(f"no feature config at {p}") from None
        except (ValueError, TypeError) as exc:  # malformed, not UTF-8, nested too deeply
            raise DataError(f"unreadable feature config {p}: {exc}") from None

    # -- shapes (each kind states its own; see FeatureKind) ------------------------------
    def windows(self, kind: str) -> Windows:
        """Where the windows of ``kind`` lie in a clip."""
        return get_kind(kind).windows(self)

    def frames(self, kind: str) -> int | None:
        """Window length in frames of a kind cut from a whole clip's spectrogram (None for a
        kind rendered segment by segment: mel, mfcc)."""
        return self.windows(kind).frames

    def segment_samples(self, kind: str) -> int:
        """Samples in one window of ``kind``.

        >>> FeatureConfig(image_seconds=5.0).segment_samples("mel")
        110250"""
        return int(round(self.seconds(kind) * self.sr))

    def seconds(self, kind: str) -> float:
        """Seconds of one window of ``kind``."""
        return self.windows(kind).seconds

    def feature_shape(self, kind: str) -> tuple[int, ...]:
        """Shape of one stored feature: (H, W) for mel images, (frames, n_mfcc) for MFCC,
        (frames, bands) for the window kinds."""
        return get_kind(kind).shape(self)


@dataclass(frozen=True)
class Segment:
    """One window of a clip's waveform: its index, start, the fill added to a clip shorter
    than a window, and its samples."""
    index: int
    start_s: float
    padded_s: float  # seconds of fill added because the clip was shorter than a segment
    audio: np.ndarray


def segment_starts(n_samples: int, seg_len: int, hop: int | None, count: int | None) -> list[int]:
    """Start samples of fixed-length windows over a clip of ``n_samples``.

    ``count`` windows evenly spaced from start to end, else windows every ``hop`` samples
    (``None``: back to back); a clip shorter than one window gives one padded window.
    """
    if n_samples <= seg_len:
        return [0]
    last = n_samples - seg_len
    if count is not None:
        if count == 1:
            return [last // 2]
        return [int(round(x)) for x in np.linspace(0, last, count)]
    step = hop if hop else seg_len
    return list(range(0, last + 1, step))


def segment_audio(y: np.ndarray, cfg: FeatureConfig, kind: str) -> list[Segment]:
    """Cut a waveform into the segments of a kind rendered segment by segment (mel, mfcc)."""
    seg_len = cfg.segment_samples(kind)
    w = cfg.windows(kind)
    hop_s, count = w.hop_seconds, w.count
    hop = int(round(hop_s * cfg.sr)) if hop_s else None
    out = []
    for i, start in enumerate(segment_starts(len(y), seg_len, hop, count)):
        chunk = y[start:start + seg_len]
        short = seg_len - len(chunk)
        if short > 0:
            if cfg.pad_mode == "wrap" and len(chunk) > 0:
                chunk = np.pad(chunk, (0, short), mode="wrap")
            else:
                chunk = np.pad(chunk, (0, short))
        out.append(Segment(index=i, start_s=start / cfg.sr, padded_s=max(short, 0) / cfg.sr,
                           audio=np.ascontiguousarray(chunk, dtype=np.float32)))
    return out


def mel_power(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Mel power spectrogram (n_mels, frames)."""
    import librosa

    return librosa.feature.melspectrogram(y=y, sr=cfg.sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                          n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)


def power_db(power: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """A mel power spectrogram in dB (float32), floored ``top_db`` below its peak."""
    import librosa

    return librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=cfg.top_db).astype(np.float32)


def mel_db(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """dB-scaled mel power spectrogram (n_mels, frames), floored ``top_db`` below its peak."""
    return power_db(mel_power(y, cfg), cfg)


def musicnn_log(power: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """musicnn's compression of a mel power spectrogram: log10(10000 * mel + 1), float32."""
    return np.log10(10000.0 * power.astype(np.float32) + 1.0)


def db_to_image(db: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Map mel dB to an 8-bit grayscale image (H, W): peak -> 255, peak - top_db -> 0,
    low frequencies at the bottom, resized bilinearly to the configured size."""
    from PIL import Image

    x = (db - db.max()) / cfg.top_db + 1.0
    x = np.clip(x, 0.0, 1.0)[::-1]  # low frequencies at the bottom of the picture
    img = Image.fromarray(np.ascontiguousarray(x, dtype=np.float32), mode="F")
    mel = cfg.of("mel")
    img = img.resize((mel.width, mel.height), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)
    return np.clip(np.rint(arr * 255.0), 0, 255).astype(np.uint8)


def db_to_mfcc(db: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """MFCC sequence, time first: (frames, n_mfcc) float32 (``librosa.feature.mfcc`` of the mel dB:
    an orthonormal type-II DCT over the mel bands, no liftering)."""
    import librosa

    m = librosa.feature.mfcc(S=db, n_mfcc=cfg.of("mfcc").n_mfcc, dct_type=2, norm="ortho", lifter=0)
    return np.ascontiguousarray(m.T, dtype=np.float32)


SpecTransform = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def extract(y: np.ndarray, cfg: FeatureConfig, kind: str,
            spec_transform: SpecTransform | None = None,
            rng: np.random.Generator | None = None) -> list[tuple[Segment, np.ndarray]]:
    """Segment a waveform (mono, ``cfg.sr`` Hz) and compute one feature per segment.

    ``spec_transform`` (e.g. a SpecAugment mask) is applied to each segment's mel dB
    before it becomes an image or MFCCs. Returns ``[(segment, feature), ...]``.
    """
    render = get_kind(kind).render
    if rng is None:
        rng = np.random.default_rng(0)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported as a FeatureError instead
        return render(y, cfg, spec_transform, rng)


def spectral_render(kind: str) -> Render:
    """The render of a kind made from the mel power spectrogram (its :attr:`FeatureKind.spectral`):
    per segment, each waveform segment's own spectrogram through ``from_power``, the mask, then
    ``to_feature``; per clip, the whole clip's through ``from_power``, cut into frame windows
    (the mask acting on each window). Augment's fast path computes the same from the STFT."""

    def render(y, cfg, spec_transform, rng) -> list[tuple[Segment, np.ndarray]]:
        path = get_kind(kind).spectral
        if not path.per_segment:
            w = cfg.windows(kind)
            spec = finite_spectrogram(path.from_power(mel_power(y, cfg), cfg))
            return frame_windows(spec, cfg, w.frames, w.hop_frames, spec_transform, rng)
        out = []
        for seg in segment_audio(y, cfg, kind):
            spec = finite_spectrogram(path.from_power(mel_power(seg.audio, cfg), cfg))
            if spec_transform is not None:
                spec = spec_transform(spec, rng)
            out.append((seg, path.to_feature(spec, cfg)))
        return out

    return render


def finite_spectrogram(spec: np.ndarray) -> np.ndarray:
    """``spec``, or :class:`FeatureError` when it holds a NaN or an infinite value."""
    if not np.all(np.isfinite(spec)):
        raise FeatureError("the spectrogram has NaN or infinite values (samples far outside -1..1?)")
    return spec


def check_features(kind: str, feats: list[np.ndarray]) -> None:
    """Raise :class:`FeatureError` when a track's features are unusable: a non-finite value, or
    every segment constant (a flat image or flat MFCCs carry no information; training on them
    teaches nothing and evaluating them gives a confident answer about nothing)."""
    if not feats:
        raise FeatureError(f"no {kind} segment")
    for f in feats:
        if not np.all(np.isfinite(f)):
            raise FeatureError(f"{kind} features have NaN or infinite values")
    if all(float(np.ptp(f)) == 0.0 for f in feats):
        raise FeatureError(f"{kind} features are constant (no signal)")


def frame_windows(spec: np.ndarray, cfg: FeatureConfig, n: int, hop: int | None,
                  spec_transform: SpecTransform | None = None, rng: np.random.Generator | None = None,
                  frame_seconds: float | None = None) -> list[tuple[Segment, np.ndarray]]:
    """Cut a whole clip's (n_mels, frames) spectrogram into time-first windows of ``n`` frames
    (the first at frame 0, an incomplete last one dropped; a clip shorter than one window is
    filled by ``pad_mode``). ``spec_transform`` sees each window as (n_mels, frames).

    Used for musicnn's input — log10(10000 * mel + 1), 187-frame windows, the original
    framing — for the 64x400 dB mel windows ("melspec") and for tempogram windows.
    ``frame_seconds``: seconds per frame (default ``cfg.hop_length / cfg.sr``)."""
    step_s = frame_seconds if frame_seconds is not None else cfg.hop_length / cfg.sr
    x = np.ascontiguousarray(spec.T, dtype=np.float32)
    hop = hop or n
    padded = 0
    if x.shape[0] < n:
        padded = n - x.shape[0]
        x = np.pad(x, ((0, padded), (0, 0)), mode="wrap" if cfg.pad_mode == "wrap" else "constant")
    out = []
    for i, start in enumerate(range(0, x.shape[0] - n + 1, hop)):
        w = x[start:start + n]
        if spec_transform is not None:
            w = np.ascontiguousarray(spec_transform(w.T.copy(), rng).T)
        seg = Segment(index=i, start_s=start * step_s, padded_s=padded * step_s,
                      audio=np.zeros(0, dtype=np.float32))
        out.append((seg, np.ascontiguousarray(w, dtype=np.float32)))
    return out


def tempo_bpm_axis(cfg: FeatureConfig) -> np.ndarray:
    """The BPM of each tempogram bin (log-spaced, ``tempo_bpm_min`` to ``tempo_bpm_max``)."""
    t = cfg.of("tempogram")
    return np.geomspace(t.bpm_min, t.bpm_max, t.bins)


def tempogram(y: np.ndarray, cfg: FeatureConfig, spec_transform: SpecTransform | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Log-BPM autocorrelation tempogram of a clip: (tempo_bins, steps) float32.

    Onset strength (spectral flux of a 64-band dB mel spectrogram, librosa) -> local
    autocorrelation over ``tempo_ac_frames`` (librosa.feature.tempogram, each frame scaled to
    its lag-0 value) -> linear interpolation at the lag of each BPM bin (lag = 60 sr / (hop BPM))
    -> mean over blocks of ``tempo_step_frames`` frames. ``spec_transform`` (a SpecAugment
    mask) acts on the mel spectrogram before the onsets are taken. BLAS runs on one thread here:
    its multi-threaded sums differ in the last bit, and the same seed must give the same bytes
    whatever the worker count."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _tempogram(y, cfg, spec_transform, rng)


def _tempogram(y, cfg, spec_transform, rng) -> np.ndarray:
    import librosa

    t = cfg.of("tempogram")
    hop = t.hop_length
    mel = librosa.feature.melspectrogram(y=y, sr=cfg.sr, n_fft=4 * hop, hop_length=hop, n_mels=TEMPO_ONSET_MELS)
    db = librosa.power_to_db(mel, ref=np.max, top_db=cfg.top_db)
    if spec_transform is not None:
        db = spec_transform(db, rng if rng is not None else np.random.default_rng(0))
    env = librosa.onset.onset_strength(S=db, sr=cfg.sr, hop_length=hop)
    ac = librosa.feature.tempogram(onset_envelope=env, sr=cfg.sr, hop_length=hop, win_length=t.ac_frames)
    lag = 60.0 * cfg.sr / (hop * tempo_bpm_axis(cfg))
    lo = np.floor(lag).astype(int)
    w = (lag - lo)[:, None]
    tg = (1.0 - w) * ac[lo] + w * ac[lo + 1]  # (bins, frames)
    if tg.shape[1] < t.step_frames:
        return tg.mean(axis=1, keepdims=True).astype(np.float32)
    steps = tg.shape[1] // t.step_frames
    tg = tg[:, :steps * t.step_frames].reshape(tg.shape[0], steps, t.step_frames).mean(axis=2)
    return np.ascontiguousarray(tg, dtype=np.float32)


def image_to_input(img: np.ndarray) -> np.ndarray:
    """uint8 image (H, W) -> float32 model input (H, W, 1) in [0, 1]."""
    return (np.asarray(img, dtype=np.float32) / 255.0)[..., None]


# -- feature kinds -------------------------------------------------------------------------
# Each kind is one FeatureKind: its window geometry and shape, how it is rendered from a
# waveform, how it is stored and read back, the spectrogram settings it was designed for and
# whether `genrekit augment` renders it by default, how it is described in a model card and
# how its hop is set, and (``spectral``) whether it is made from the mel power spectrogram, in
# which case augment reads its stretch / pitch / mask variants from the original's STFT. augment,
# the CLI, the loaders, runs and model cards ask the registry; adding a kind is one
# register_kind() call here (with its settings record, when it has settings of its own) and
# its test (tests/test_feature_kinds.py).

Render = Callable[["np.ndarray", "FeatureConfig", "SpecTransform | None", "np.random.Generator"],
                  "list[tuple[Segment, np.ndarray]]"]


@dataclass(frozen=True)
class Windows:
    """Where a kind's windows lie in a clip.

    A kind rendered segment by segment (mel, mfcc) has ``hop_seconds`` between segment starts
    (None: back to back) or ``count`` evenly spaced segments; a kind cut from a whole clip's
    spectrogram (musicnn, melspec, tempogram) has windows of ``frames`` frames every
    ``hop_frames`` (None: back to back), a frame being ``frame_samples`` samples."""

    seconds: float  # one window
    hop_seconds: float | None = None
    count: int | None = None
    frames: int | None = None
    hop_frames: int | None = None
    frame_samples: int | None = None

    def samples(self, sr: int) -> tuple[int, int]:
        """(window length, hop between window starts) in samples at ``sr`` Hz (the hop of
        ``count`` evenly spaced segments, which depends on the clip, is given as the length)."""
        if self.frames is None:
            seg = int(round(self.seconds * sr))
            hop = int(round(self.hop_seconds * sr)) if self.hop_seconds and self.count is None else seg
            return seg, hop
        return self.frames * self.frame_samples, (self.hop_frames or self.frames) * self.frame_samples


@dataclass(frozen=True)
class Storage:
    """How features are kept on disk: file suffix, atomic writer, reader, and the map from a
    stored array to model input."""

    suffix: str
    save: Callable[[Path, np.ndarray], None]
    read: Callable[[Path], np.ndarray]
    to_input: Callable[[np.ndarray], np.ndarray]


def _read_png(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def _read_npy(path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _as_float32(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float32)


PNG_IMAGE = Storage("png", save_png_atomic, _read_png, image_to_input)  # 8-bit grayscale, input (H, W, 1) in [0, 1]
NPY_ARRAY = Storage("npy", save_npy_atomic, _read_npy, _as_float32)  # float32 array, input as stored


def time_first(spec: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """One (bands, frames) window as a stored window feature: time first, float32."""
    return np.ascontiguousarray(np.ascontiguousarray(spec.T), dtype=np.float32)


@dataclass(frozen=True)
class Spectral:
    """How a kind is made from the mel power spectrogram of the shared settings (``sr``,
    ``n_fft``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``), which lets augment read its stretch
    and pitch variants from the original's STFT and mask the spectrograms the original kept
    (its render is :func:`spectral_render`).

    ``from_power`` maps mel power (n_mels, frames) to the spectrogram a SpecAugment mask acts on;
    ``to_feature`` maps one (masked) segment or window of it to the stored feature;
    ``per_segment``: True for a kind rendered segment by segment (each waveform segment's own
    spectrogram: mel, mfcc), False for one cut into frame windows from the whole clip's."""

    from_power: Callable[[np.ndarray, FeatureConfig], np.ndarray]
    to_feature: Callable[[np.ndarray, FeatureConfig], np.ndarray] = time_first
    per_segment: bool = False


@dataclass(frozen=True)
class FeatureKind:
    """A feature kind: how it is rendered, cut into windows, stored and described
    (registered with :func:`register_kind`)."""
    name: str
    description: str  # one line, for `genrekit augment --help`
    render: Render  # (waveform, config, spec_transform, rng) -> [(segment, feature)]
    windows: Callable[[FeatureConfig], Windows]
    shape: Callable[[FeatureConfig], tuple[int, ...]]  # one stored feature
    work_bytes: Callable[[FeatureConfig, float], int]  # working memory of a clip of so many seconds
    storage: Storage = NPY_ARRAY
    audio: Mapping[str, int] = field(default_factory=dict)  # the spectrogram settings it was made for
    default: bool = False  # rendered by `genrekit augment` when no kind is named
    formula: Callable[[FeatureConfig], str] | None = None  # the computation in words, for model cards
    hop: Callable[[FeatureConfig, float], FeatureConfig] | None = None  # cfg with windows every so many seconds
    spectral: Spectral | None = None  # made from the mel power spectrogram (augment's fast path)
    settings: object | None = None  # its own settings record, its defaults (FeatureConfig.of)
    settings_prefix: str | None = None  # the prefix of their flat names (None: "<name>_")
    words: Callable[[FeatureConfig], str] | None = None  # one feature's shape in words, for reports
    floored: bool = False  # its dB values are floored top_db below the peak (reports say so)

    def flat_names(self) -> dict[str, str]:
        """Each field of the kind's settings record -> its flat name (feature_config.json, the CLI):
        the prefix and the field's name, or the name in the field's metadata."""
        if self.settings is None:
            return {}
        prefix = f"{self.name}_" if self.settings_prefix is None else self.settings_prefix
        return {f.name: f.metadata.get("flat", prefix + f.name) for f in fields(self.settings)}

    @property
    def image(self) -> bool:
        """Stored as an image; its model input has a channel axis."""
        return self.storage is PNG_IMAGE

    def input_shape(self, cfg: FeatureConfig) -> tuple[int, ...]:
        """Shape of one model input."""
        return self.shape(cfg) + ((1,) if self.image else ())

    def relpath(self, track_id: str, variant: str, segment: int) -> str:
        """Where a feature file lives in a feature folder: ``<kind>/<track>.<variant>.<NNN>.<ext>``."""
        return f"{self.name}/{track_id}.{variant}.{segment:03d}.{self.storage.suffix}"

    def store(self, path, feature: np.ndarray) -> None:
        """Write one feature file atomically (temporary name, then rename)."""
        self.storage.save(Path(path), feature)

    def load(self, path) -> np.ndarray:
        """One feature file as model input."""
        return self.storage.to_input(self.storage.read(Path(path)))

    def to_input(self, feature: np.ndarray) -> np.ndarray:
        """A rendered feature as model input (the same values :meth:`load` gives for its file)."""
        return self.storage.to_input(feature)

    def with_hop(self, cfg: FeatureConfig, hop_s: float | None) -> FeatureConfig:
        """``cfg`` with this kind's windows every ``hop_s`` seconds (rounded to whole frames for
        a kind cut from a spectrogram), the window length unchanged; None: ``cfg`` as it is."""
        if hop_s is None:
            return cfg
        if self.hop is None:
            raise DataError(f"feature kind {self.name!r} has no adjustable hop")
        return self.hop(cfg, hop_s)

    def describe(self, cfg: FeatureConfig) -> str:
        """How one feature is computed from the decoded waveform ``y``, exactly enough to be
        reproduced outside genrekit where that is practical (model cards)."""
        if self.formula is None:
            return f"{self.description}, see genrekit.data_tools.features (not reproduced outside genrekit)"
        return self.formula(cfg)


KINDS: dict[str, FeatureKind] = {}


def register_kind(kind: FeatureKind) -> FeatureKind:
    """Add a feature kind to the registry (a name may be registered once)."""
    if not kind.name or not kind.name.isidentifier():
        raise DataError(f"a feature kind's name must be a plain word, got {kind.name!r}")
    if kind.name in KINDS:
        raise DataError(f"feature kind {kind.name!r} is registered already")
    names = kind.flat_names()
    taken = [n for n in names.values() if n in _FLAT or n in SHARED_SETTINGS]
    if taken:
        raise DataError(f"feature kind {kind.name!r}: setting name(s) {', '.join(taken)} "
                        "are taken already")
    KINDS[kind.name] = kind
    _FLAT.update((flat, (kind.name, attr)) for attr, flat in names.items())
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind registered by :func:`register_kind` (and its setting names), e.g. a test's."""
    kind = get_kind(name)
    del KINDS[name]
    for flat in kind.flat_names().values():
        _FLAT.pop(flat, None)


def get_kind(name: str) -> FeatureKind:
    """The registered kind ``name``; one line naming the known kinds otherwise.

    >>> get_kind("mel").image
    True"""
    try:
        return KINDS[name]
    except (KeyError, TypeError):
        raise DataError(f"unknown feature kind {name!r} (known: {', '.join(KINDS)})") from None


def kind_names() -> tuple[str, ...]:
    """Every registered kind, in registration order."""
    return tuple(KINDS)


def fingerprint_of(config: dict) -> str:
    """The fingerprint of a feature config as a mapping (what a run's config.json records beside it)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def settings_words(cfg: FeatureConfig, kind: str) -> str:
    """One kind's window settings in a few words, for reports: "mel 256 x 256 image per 30 s,
    back to back", "musicnn 187 frames x 96 mels per 2.99 s, back to back"."""
    k, w = get_kind(kind), cfg.windows(kind)
    shape = k.shape(cfg)
    if k.words is not None:
        what = k.words(cfg)
    elif w.frames is not None:
        what = f"{w.frames} frames x {shape[1]} bins"
    else:
        what = f"{shape[0]} x {shape[1]} image" if k.image else " x ".join(map(str, shape))
    if w.frames is None:  # segments of the waveform, each rendered on its own
        where = (f", {w.count} evenly spaced" if w.count else f", every {w.hop_seconds:g} s" if w.hop_seconds
                 else ", back to back")
        return f"{kind} {what} per {w.seconds:.3g} s{where}"
    hop = f"every {w.hop_frames} frames" if w.hop_frames else "back to back"
    return f"{kind} {what} per {w.seconds:.3g} s, {hop}"


def _mel_windows_words(kind: str):
    return lambda cfg: f"{cfg.of(kind).frames} frames x {cfg.n_mels} mels"


def default_kinds() -> tuple[str, ...]:
    """The kinds `genrekit augment` renders when none are named."""
    return tuple(k.name for k in KINDS.values() if k.default)


def feature_config_for(kinds, **given) -> FeatureConfig:
    """The feature config for rendering ``kinds``: FeatureConfig's defaults, then the
    spectrogram settings of the first of ``kinds`` (in registry order) that has its own
    (musicnn before melspec), then every value of ``given`` that is not None."""
    wanted = [get_kind(k) for k in kinds]
    base: dict = {}
    for kind in KINDS.values():
        if kind in wanted and kind.audio:
            base = dict(kind.audio)
            break
    base.update({k: v for k, v in given.items() if v is not None})
    return FeatureConfig.from_dict(base)


# -- the built-in kinds ----------------------------------------------------------------------

def _mel_words(cfg: FeatureConfig, where: str = " over the whole file") -> str:
    return (f"M = librosa.feature.melspectrogram(y=y, sr={cfg.sr}, n_fft={cfg.n_fft}, hop_length={cfg.hop_length}, "
            f"n_mels={cfg.n_mels}, fmin={cfg.fmin}, fmax={cfg.fmax}){where} (power, librosa defaults "
            "otherwise: centred frames, Hann window, Slaney mel)")


def _db_words(cfg: FeatureConfig, kind: str) -> str:
    return (f"D = librosa.power_to_db(M, ref=1.0, amin=1e-10, top_db={cfg.top_db}) per {cfg.seconds(kind):g} s "
            f"segment ({_mel_words(cfg, '')})")


def _hop_frames(kind: str, frame_samples):
    """``hop`` of a kind cut into frame windows: its ``hop_frames``, ``hop_s`` in whole frames."""
    def hop(cfg: FeatureConfig, hop_s: float) -> FeatureConfig:
        return cfg.with_settings(kind, hop_frames=max(1, round(hop_s * cfg.sr / frame_samples(cfg))))
    return hop


def _hop_seconds(kind: str):
    """``hop`` of a kind rendered segment by segment: a segment every ``hop_s`` seconds."""
    return lambda cfg, hop_s: cfg.with_settings(kind, hop_seconds=hop_s, segments=None)


def _segment_windows(kind: str):
    def windows(cfg: FeatureConfig) -> Windows:
        s = cfg.of(kind)
        return Windows(s.seconds, s.hop_seconds, s.segments)
    return windows


def _frame_windows(kind: str):
    """The windows of a kind cut from a clip's spectrogram (frames of ``hop_length`` samples)."""
    def windows(cfg: FeatureConfig) -> Windows:
        s = cfg.of(kind)
        return Windows(s.frames * cfg.hop_length / cfg.sr, frames=s.frames, hop_frames=s.hop_frames,
                       frame_samples=cfg.hop_length)
    return windows


def _segment_work(kind: str):
    return lambda cfg, clip_seconds: cfg.segment_bytes(kind)


def _clip_work(cfg: FeatureConfig, kind: str, clip_seconds: float) -> int:
    return cfg.stft_bytes(max(clip_seconds, cfg.seconds(kind)))


def _mel_formula(cfg: FeatureConfig) -> str:
    mel = cfg.of("mel")
    return (f"{_db_words(cfg, 'mel')}; an 8-bit image ((D - max D) / {cfg.top_db} + 1 clipped to "
            "0..1, "
            f"low frequencies at the bottom, bilinear resize to {mel.height} x {mel.width}, "
            "rounded to 0..255) divided by 255")


register_kind(FeatureKind(
    "mel", "8-bit grayscale PNGs of the dB mel spectrogram, one per --image-seconds",
    render=spectral_render("mel"), spectral=Spectral(power_db, db_to_image, per_segment=True),
    windows=_segment_windows("mel"),
    shape=lambda cfg: (cfg.of("mel").height, cfg.of("mel").width),
    work_bytes=_segment_work("mel"), storage=PNG_IMAGE, default=True,
    hop=_hop_seconds("mel"), formula=_mel_formula, floored=True,
    settings=MelImageSettings(), settings_prefix="image_"))

register_kind(FeatureKind(
    "mfcc", "MFCC sequences, time first, over --mfcc-seconds windows",
    render=spectral_render("mfcc"), spectral=Spectral(power_db, db_to_mfcc, per_segment=True),
    windows=_segment_windows("mfcc"),
    shape=lambda cfg: (1 + cfg.segment_samples("mfcc") // cfg.hop_length, cfg.of("mfcc").n_mfcc),
    work_bytes=_segment_work("mfcc"), default=True, hop=_hop_seconds("mfcc"),
    formula=lambda cfg: (f"{_db_words(cfg, 'mfcc')}; scipy.fft.dct(D, axis=0, type=2, norm='ortho')"
                         f"[:{cfg.of('mfcc').n_mfcc}], time first"),
    words=lambda cfg: (f"{cfg.of('mfcc').n_mfcc} coefficients x "
                       f"{cfg.feature_shape('mfcc')[0]} frames"),
    floored=True, settings=MfccSettings()))


register_kind(FeatureKind(
    "musicnn", "log-mel windows, musicnn's own input: 16 kHz, 96 bands, 187 frames",
    render=spectral_render("musicnn"), spectral=Spectral(musicnn_log),
    windows=_frame_windows("musicnn"),
    shape=lambda cfg: (cfg.of("musicnn").frames, cfg.n_mels),
    work_bytes=lambda cfg, secs: _clip_work(cfg, "musicnn", secs), audio=MappingProxyType(MUSICNN_FEATURES),
    hop=_hop_frames("musicnn", lambda cfg: cfg.hop_length),
    formula=lambda cfg: f"{_mel_words(cfg)}; x = log10(10000 * M + 1), float32",
    # 187 frames = 3 s at 16 kHz, hop 256
    words=_mel_windows_words("musicnn"), settings=FrameWindowSettings(187)))


register_kind(FeatureKind(
    "melspec", "64-band x 400-frame dB mel windows",
    render=spectral_render("melspec"), spectral=Spectral(power_db),
    windows=_frame_windows("melspec"),
    shape=lambda cfg: (cfg.of("melspec").frames, cfg.n_mels),
    work_bytes=lambda cfg, secs: _clip_work(cfg, "melspec", secs), audio=MappingProxyType(MELSPEC_64X400_FEATURES),
    hop=_hop_frames("melspec", lambda cfg: cfg.hop_length),
    formula=lambda cfg: (f"{_mel_words(cfg)}; x = librosa.power_to_db(M, ref=1.0, amin=1e-10, top_db={cfg.top_db}) "
                         "(the floor is relative to the whole file's peak), float32"),
    words=_mel_windows_words("melspec"), floored=True, settings=FrameWindowSettings(400)))


def _tempo_frame_samples(cfg: FeatureConfig) -> int:
    t = cfg.of("tempogram")
    return t.step_frames * t.hop_length


def _render_tempogram(y, cfg, spec_transform, rng):
    t = cfg.of("tempogram")
    spec = finite_spectrogram(tempogram(y, cfg, spec_transform, rng))
    return frame_windows(spec, cfg, t.frames, t.hop_frames, frame_seconds=_tempo_frame_samples(cfg) / cfg.sr)


def _tempogram_work(cfg: FeatureConfig, clip_seconds: float) -> int:
    secs = max(clip_seconds, cfg.seconds("tempogram"))
    t = cfg.of("tempogram")
    frames = 1 + int(secs * cfg.sr) // t.hop_length
    stft = cfg.stft_bytes(secs, n_fft=4 * t.hop_length, hop_length=t.hop_length)
    return stft + frames * t.ac_frames * 16


def _tempogram_windows(cfg: FeatureConfig) -> Windows:
    t = cfg.of("tempogram")
    step = _tempo_frame_samples(cfg)
    return Windows(t.frames * step / cfg.sr, frames=t.frames, hop_frames=t.hop_frames, frame_samples=step)


register_kind(FeatureKind(
    "tempogram", "log-BPM tempogram windows, for --task tempo and --arch fusion",
    render=_render_tempogram, windows=_tempogram_windows,
    shape=lambda cfg: (cfg.of("tempogram").frames, cfg.of("tempogram").bins),
    work_bytes=_tempogram_work, hop=_hop_frames("tempogram", _tempo_frame_samples),
    formula=lambda cfg: ("log-BPM tempogram, see genrekit.data_tools.features.tempogram "
                         "(not reproduced outside genrekit)"),
    settings=TempogramSettings(), settings_prefix="tempo_"))

FEATURE_KINDS = kind_names()  # the built-in kinds (a kind registered later is in kind_names())
