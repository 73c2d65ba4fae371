"""Decoding audio files to mono float32 at a chosen sample rate.

Container headers are checked before decoding so that a truncated WAV or AU file (whose
header promises more audio than the file holds) is reported instead of silently decoded
short, as libsndfile would.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.errors import AudioDecodeError

AUDIO_EXTENSIONS = (".wav", ".au", ".mp3", ".flac", ".ogg")


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded clip: ``y`` is mono float32 at ``sr`` Hz; ``native_sr`` is the file's rate."""

    y: np.ndarray
    sr: int
    native_sr: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.y) / float(self.sr)


def _check_wav_header(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
            raise AudioDecodeError("not a RIFF/WAVE file")
        if head[:4] == b"RF64":
            return
        endian = "<" if head[:4] == b"RIFF" else ">"
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            if len(chunk) < 8:
                break
            cid = chunk[:4]
            (csize,) = struct.unpack(endian + "I", chunk[4:])
            if cid == b"data":
                available = size - (pos + 8)
                if csize != 0xFFFFFFFF and csize > available:
                    raise AudioDecodeError(
                        f"truncated: header declares {csize} bytes of audio, file holds {available}"
                    )
                return
            pos += 8 + csize + (csize & 1)
        raise AudioDecodeError("WAVE file has no data chunk")


def _check_au_header(path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        head = fh.read(12)
    if len(head) < 12 or head[:4] != b".snd":
        raise AudioDecodeError("not a Sun/NeXT .au file")
    offset, data_size = struct.unpack(">II", head[4:12])
    if data_size != 0xFFFFFFFF and offset + data_size > size:
        raise AudioDecodeError(
            f"truncated: header declares {data_size} bytes of audio, file holds {max(0, size - offset)}"
        )


def check_container(path: str | os.PathLike) -> None:
    """Raise :class:`AudioDecodeError` for an empty file or a WAV/AU header that lies."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if size == 0:
        raise AudioDecodeError("empty file (0 bytes)")
    ext = path.suffix.lower()
    try:
        if ext == ".wav":
            _check_wav_header(path, size)
        elif ext == ".au":
            _check_au_header(path, size)
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None


def load_audio(path: str | os.PathLike, sr: int, offset_s: float = 0.0,
               duration_s: float | None = None) -> DecodedAudio:
    """Decode ``path`` to mono float32 resampled to ``sr`` Hz (soxr high quality).

    Raises :class:`AudioDecodeError` with a short reason when the file is not decodable.
    """
    import soundfile as sf

    check_container(path)
    try:
        with sf.SoundFile(str(path)) as fh:
            native_sr = int(fh.samplerate)
            channels = int(fh.channels)
            if offset_s:
                fh.seek(int(offset_s * native_sr))
            frames = -1 if duration_s is None else int(round(duration_s * native_sr))
            data = fh.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioDecodeError(f"cannot decode: {msg}") from None
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if data.shape[0] == 0:
        raise AudioDecodeError("no audio frames in file")
    y = data.mean(axis=1) if channels > 1 else data[:, 0]
    if not np.all(np.isfinite(y)):
        raise AudioDecodeError("audio contains NaN or infinite samples")
    if native_sr != sr:
        import librosa

        y = librosa.resample(y, orig_sr=native_sr, target_sr=sr, res_type="soxr_hq")
    return DecodedAudio(y=np.ascontiguousarray(y, dtype=np.float32), sr=sr,
                        native_sr=native_sr, channels=channels)


def peak_dbfs(y: np.ndarray) -> float:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return -np.inf if peak <= 0 else 20.0 * np.log10(peak)
