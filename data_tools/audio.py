"""Decoding audio files to mono float32 at a chosen sample rate.

Container headers are checked before decoding so that a truncated WAV or AU file (whose
header promises more audio than the file holds) is reported instead of silently decoded
short, as libsndfile would; the duration in the header is checked against ``max_seconds``
before anything is decoded, and at most ``max_seconds`` of audio is ever read, so one file
cannot cost more memory than that (a header that lies about its length included).
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genrekit.data_tools.errors import AudioDecodeError, AudioTooLongError

AUDIO_EXTENSIONS = (".wav", ".au", ".mp3", ".flac", ".ogg")
MIN_SAMPLE_RATE = 1000  # Hz: a header claiming less is not audio (1 Hz would resample 22,050-fold)
MAX_SAMPLE_RATE = 768000


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded clip: ``y`` is mono float32 at ``sr`` Hz; ``native_sr`` is the file's rate."""

    y: np.ndarray
    sr: int
    native_sr: int
    channels: int

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
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


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (from ``os.stat().st_mode``)."""
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return what
    return "not a plain file"


def check_container(path: str | os.PathLike) -> None:
    """Raise :class:`AudioDecodeError` for what is not a regular file (a FIFO would block the
    first read: it is never opened), an empty file or a WAV/AU header that lies."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AudioDecodeError(f"not a regular file ({file_kind(st.st_mode)}); not read")
    size = st.st_size
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


class _Fd2:
    """File descriptor 2, shared by the threads of the process. Decoding a file points it at
    /dev/null (mpg123, inside libsndfile, prints "Note: Illegal Audio-MPEG-Header ..." on fd 2
    for a damaged MP3), and decoder threads overlap: the first to start silences it, the last
    to end restores it (a per-thread save and restore would leave it pointing at /dev/null when
    two overlap). genrekit's own lines (a file's error while others decode) are written inside
    :meth:`speaking`: it waits until no decoder holds fd 2 silenced, and new decoders wait
    until the line is written, so that no line is lost."""

    def __init__(self):
        self._cond = threading.Condition()
        self._silencers = 0  # decodes holding fd 2 silenced
        self._speakers = 0  # genrekit lines waiting or being written (new silencers wait for them)
        self._saved: int | None = None  # the real fd 2 while silenced
        self._mine = threading.local()  # this thread's silencers

    @contextlib.contextmanager
    def silenced(self, capture=None):
        """fd 2 points away while inside: at /dev/null, or at the file ``capture`` (a binary
        file object) when no other thread holds it silenced already."""
        with self._cond:
            while self._speakers and not getattr(self._mine, "n", 0):
                self._cond.wait()
            if self._silencers == 0:
                self._saved = self._point_away(capture)
            self._silencers += 1
            self._mine.n = getattr(self._mine, "n", 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._silencers -= 1
                self._mine.n -= 1
                if self._silencers == 0:
                    if self._saved is not None:
                        os.dup2(self._saved, 2)
                        os.close(self._saved)
                        self._saved = None
                    self._cond.notify_all()

    @contextlib.contextmanager
    def speaking(self):
        """Write a genrekit line inside: waits until no other thread holds fd 2 silenced, and
        new silencers wait until the line is written."""
        with self._cond:
            self._speakers += 1
            try:
                # a thread that silenced fd 2 itself cannot wait for itself: its line goes where fd 2 points
                while self._silencers and not getattr(self._mine, "n", 0):
                    self._cond.wait()
                yield
                try:
                    sys.stderr.flush()
                except (OSError, ValueError, AttributeError):
                    pass
            finally:
                self._speakers -= 1
                self._cond.notify_all()

    @staticmethod
    def _point_away(capture) -> int | None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        try:
            saved = os.dup(2)
        except OSError:
            return None
        try:
            if capture is not None:
                os.dup2(capture.fileno(), 2)
            else:
                null = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(null, 2)
                finally:
                    os.close(null)
        except (OSError, ValueError, AttributeError):
            os.close(saved)
            return None
        return saved


_FD2 = _Fd2()
_quiet_stderr = _FD2.silenced


def silenced_stderr(capture=None):
    """fd 2 silenced (or pointed at the binary file ``capture``) while inside, shared safely with
    the decoder threads (:class:`_Fd2`): for C libraries that write to fd 2 (TensorFlow's import)."""
    return _FD2.silenced(capture)


def stderr_line_guard():
    """A context in which a line written to stderr reaches it while other threads decode audio
    (:class:`_Fd2`): ``with stderr_line_guard(): print(msg, file=sys.stderr)``."""
    return _FD2.speaking()


def _decode_message(exc: BaseException) -> str:
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    msg = re.sub(r"^Error opening .*?: ", "", msg)
    if "possibly a pipe" in msg or "Format not recognised" in msg or "unknown format" in msg.lower():
        return "not a recognised audio format (unknown or corrupt data)"
    return f"cannot decode: {msg}"


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """(native sample rate, channels, frames) from a file's header, without decoding it."""
    import soundfile as sf

    check_container(path)
    try:
        with _quiet_stderr(), sf.SoundFile(str(path)) as fh:
            return int(fh.samplerate), int(fh.channels), int(fh.frames)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioDecodeError(_decode_message(exc)) from None
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None


def load_audio(path: str | os.PathLike, sr: int, offset_s: float = 0.0,
               duration_s: float | None = None, max_seconds: float | None = None) -> DecodedAudio:
    """Decode ``path`` to mono float32 resampled to ``sr`` Hz (soxr high quality).

    ``max_seconds``: refuse (:class:`AudioTooLongError`) a file whose header says it is longer,
    before decoding it, and never read more than that (a lying header included).
    Raises :class:`AudioDecodeError` with a short reason when the file is not decodable.
    """
    import soundfile as sf

    check_container(path)
    try:
        with _quiet_stderr(), sf.SoundFile(str(path)) as fh:
            native_sr = int(fh.samplerate)
            channels = int(fh.channels)
            if not MIN_SAMPLE_RATE <= native_sr <= MAX_SAMPLE_RATE:
                raise AudioDecodeError(f"header says {native_sr} Hz, not an audio sample rate "
                                       f"({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
            if channels < 1 or channels > 64:
                raise AudioDecodeError(f"header says {channels} channels")
            total_s = max(0, int(fh.frames) - int(offset_s * native_sr)) / native_sr
            if duration_s is not None:
                total_s = min(total_s, duration_s)
            if max_seconds is not None and total_s > max_seconds:
                raise AudioTooLongError(f"{total_s:.0f} s long, more than --max-seconds {max_seconds:g}")
            if offset_s:
                fh.seek(int(offset_s * native_sr))
            frames = -1 if duration_s is None else int(round(duration_s * native_sr))
            if max_seconds is not None:
                cap = int(max_seconds * native_sr) + 1
                frames = cap if frames < 0 else min(frames, cap)
            data = fh.read(frames=frames, dtype="float32", always_2d=True)
            if max_seconds is not None and data.shape[0] > max_seconds * native_sr:
                raise AudioTooLongError(f"longer than --max-seconds {max_seconds:g}")
    except AudioDecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioDecodeError(_decode_message(exc)) from None
    except MemoryError:
        raise AudioDecodeError("too large to decode in memory") from None
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


def audio_files_under(folder: str | os.PathLike) -> list[Path]:
    """The audio files below ``folder``, recursively and sorted; hidden entries are skipped and
    symlinked folders are not followed (what predict and embed take a folder argument to mean)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files)
                  if not f.startswith(".") and f.lower().endswith(AUDIO_EXTENSIONS)]
    return found


def peak_dbfs(y: np.ndarray) -> float:
    """Peak level of a waveform in dB full scale (-inf for silence).

    >>> round(peak_dbfs(np.array([0.5, -0.25])), 2)
    -6.02"""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    return -np.inf if peak <= 0 else float(20.0 * np.log10(peak))


def stream_audio(path: str | os.PathLike, sr: int, block_samples: int, advance_samples: int,
                 read_seconds: float = 10.0):
    """Yield ``path`` as mono float32 blocks at ``sr`` Hz without decoding it whole: block ``i``
    holds samples ``[i * advance_samples, i * advance_samples + block_samples)`` of the waveform
    (blocks overlap when ``advance_samples < block_samples``; the last one may be shorter).
    Memory stays at about one block whatever the file's length. The file is read
    ``read_seconds`` at a time and resampled with a streaming soxr resampler (high quality).
    Raises :class:`AudioDecodeError` like :func:`load_audio`."""
    import soundfile as sf

    if block_samples < 1 or advance_samples < 1:
        raise ValueError("block_samples and advance_samples must be positive")
    check_container(path)
    try:
        with _quiet_stderr():
            fh = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise AudioDecodeError(_decode_message(exc)) from None
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    try:
        native_sr, channels = int(fh.samplerate), int(fh.channels)
        if not MIN_SAMPLE_RATE <= native_sr <= MAX_SAMPLE_RATE:
            raise AudioDecodeError(f"header says {native_sr} Hz, not an audio sample rate "
                                   f"({MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
        resampler = None
        if native_sr != sr:
            import soxr

            resampler = soxr.ResampleStream(native_sr, sr, 1, dtype="float32", quality="HQ")
        step = max(1, int(read_seconds * native_sr))
        buf = np.zeros(0, dtype=np.float32)
        start = 0  # index in the whole waveform of buf[0]
        nxt = 0  # start of the next block
        total = 0
        while True:
            try:
                with _quiet_stderr():
                    data = fh.read(frames=step, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
                raise AudioDecodeError(_decode_message(exc)) from None
            last = data.shape[0] < step
            y = data.mean(axis=1) if channels > 1 else data[:, 0]
            if not np.all(np.isfinite(y)):
                raise AudioDecodeError("audio contains NaN or infinite samples")
            if resampler is not None:
                y = resampler.resample_chunk(np.ascontiguousarray(y), last=last)
            total += len(y)
            buf = np.concatenate([buf, y.astype(np.float32, copy=False)])
            while nxt + block_samples <= start + len(buf):
                yield np.ascontiguousarray(buf[nxt - start:nxt - start + block_samples])
                nxt += advance_samples
            drop = min(nxt - start, len(buf))
            buf, start = buf[drop:], start + drop
            if last:
                break
        if total == 0:
            raise AudioDecodeError("no audio frames in file")
        if nxt < start + len(buf):
            yield np.ascontiguousarray(buf[nxt - start:])
    except OSError as exc:
        raise AudioDecodeError(f"cannot read file: {exc.strerror or exc}") from None
    finally:
        fh.close()
