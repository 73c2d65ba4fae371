import os
import struct
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from genrekit.data_tools.audio import audio_info, load_audio, silenced_stderr, stderr_line_guard
from genrekit.data_tools.errors import AudioDecodeError
from tests.conftest import tone


def test_resamples_and_mixes_stereo_to_mono(tmp_path):
    y = tone(440, 1.0, 8000)
    stereo = np.stack([y, -y * 0.5], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 8000)
    a = load_audio(tmp_path / "s.wav", sr=16000)
    assert a.native_sr == 8000 and a.channels == 2 and a.sr == 16000
    assert abs(len(a.y) - 16000) <= 1
    assert a.y.dtype == np.float32
    # mono mix is the channel mean: (y - 0.5 y) / 2 = 0.25 y
    assert np.max(np.abs(a.y)) == pytest.approx(0.25 * np.max(np.abs(y)), rel=0.1)


@pytest.mark.parametrize("fmt,subtype,ext", [("MP3", "MPEG_LAYER_III", "mp3"), ("FLAC", "PCM_16", "flac"),
                                             ("OGG", "VORBIS", "ogg"), ("AU", "PCM_16", "au")])
def test_decodes_common_formats(tmp_path, fmt, subtype, ext):
    p = tmp_path / f"x.{ext}"
    sf.write(p, tone(440, 1.5, 22050), 22050, format=fmt, subtype=subtype)
    a = load_audio(p, sr=22050)
    assert 1.3 < a.duration_s < 1.7


def test_zero_byte_file(tmp_path):
    (tmp_path / "z.wav").write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(tmp_path / "z.wav", 22050)


def test_not_riff(tmp_path):
    (tmp_path / "n.wav").write_bytes(b"this is not audio at all" * 20)
    with pytest.raises(AudioDecodeError, match="not a RIFF"):
        load_audio(tmp_path / "n.wav", 22050)


def test_truncated_wav(tmp_path):
    sf.write(tmp_path / "t.wav", tone(440, 1.0, 8000), 8000, subtype="PCM_16")
    data = (tmp_path / "t.wav").read_bytes()
    (tmp_path / "t.wav").write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(tmp_path / "t.wav", 8000)


def test_truncated_au(tmp_path):
    sf.write(tmp_path / "t.au", tone(440, 1.0, 8000), 8000, format="AU", subtype="PCM_16")
    data = (tmp_path / "t.au").read_bytes()
    offset, size = struct.unpack(">II", data[4:12])
    assert size != 0xFFFFFFFF
    (tmp_path / "t.au").write_bytes(data[: offset + size // 3])
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(tmp_path / "t.au", 8000)


def test_garbage_mp3(tmp_path):
    (tmp_path / "g.mp3").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(AudioDecodeError):
        load_audio(tmp_path / "g.mp3", 22050)


def test_max_seconds_is_checked_from_the_header_and_bounds_the_read(tmp_path):
    from genrekit.data_tools.errors import AudioTooLongError

    sf.write(tmp_path / "six.wav", tone(440, 6.0, 8000), 8000)
    with pytest.raises(AudioTooLongError, match="6 s long, more than --max-seconds 5"):
        load_audio(tmp_path / "six.wav", 8000, max_seconds=5)
    assert len(load_audio(tmp_path / "six.wav", 8000, max_seconds=6).y) == 48000
    # a header that says it holds less than the file: libsndfile reads what the header says,
    # and the read is capped at max_seconds anyway
    a = load_audio(tmp_path / "six.wav", 8000, duration_s=2.0, max_seconds=5)
    assert len(a.y) == 16000


def test_impossible_sample_rates_are_refused(tmp_path):
    fmt = struct.pack("<HHIIHH", 1, 1, 1, 2, 2, 16)  # PCM, mono, 1 Hz
    n = 4000
    head = (b"RIFF" + struct.pack("<I", 36 + n) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", n))
    (tmp_path / "one_hz.wav").write_bytes(head + bytes(n))
    with pytest.raises(AudioDecodeError, match="header says 1 Hz, not an audio sample rate"):
        load_audio(tmp_path / "one_hz.wav", 22050)


def test_random_bytes_are_not_a_recognised_format(tmp_path, capfd):
    for ext in (".mp3", ".flac", ".ogg"):
        p = tmp_path / f"noise{ext}"
        p.write_bytes(np.random.default_rng(1).bytes(8000))
        with pytest.raises(AudioDecodeError, match="not a recognised audio format"):
            load_audio(p, 22050)
    assert capfd.readouterr().err == ""  # mpg123's "Note: Illegal Audio-MPEG-Header" is silenced


def test_error_lines_survive_decoder_threads_silencing_fd2(capfd, tmp_path):
    """Issue 27 #8: decoder threads silence fd 2 (mpg123's notes) and overlap; genrekit's own
    lines written meanwhile all arrive, the decoders' noise does not, and fd 2 is itself after."""
    bad = []
    for i in range(6):
        bad.append(tmp_path / f"b{i}.mp3")
        bad[-1].write_bytes(os.urandom(3000 + i))
    stop = threading.Event()
    errors = []

    def decoder(k):
        i = 0
        while not stop.is_set():
            with silenced_stderr():
                os.write(2, b"Note: Illegal Audio-MPEG-Header (a C library on fd 2)\n")
                time.sleep(0.0005 * (k + 1))
            try:  # a real decode of a damaged file: it silences fd 2 inside
                load_audio(bad[i % len(bad)], sr=8000)
            except AudioDecodeError as exc:
                errors.append(str(exc))
            i += 1

    threads = [threading.Thread(target=decoder, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(60):
            with stderr_line_guard():
                os.write(2, f"genrekit: error: f{i}.mp3: bad\n".encode())
            time.sleep(0.0003)
    finally:
        stop.set()
        for t in threads:
            t.join()
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert [ln for ln in lines if ln.startswith("genrekit")] == [f"genrekit: error: f{i}.mp3: bad" for i in range(60)]
    assert "Note:" not in err and lines[-1] == "after"
    assert errors  # the decoders did run


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_not_a_regular_file_and_is_not_opened(tmp_path):
    """Issue 27 #12: "not a regular file", not "empty file"; and no read blocks on it (the
    test would hang here if the FIFO were opened: nothing writes to it)."""
    fifo = tmp_path / "live.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioDecodeError, match=r"not a regular file \(a FIFO\)"):
        load_audio(fifo, sr=8000)
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        audio_info(fifo)
