"""Stretch and pitch variants read from the original's STFT (data_tools.augment): the sound is
right (tempo scales by the stretch rate, a tone moves by the semitones), they agree with the
waveform back-end, and the masks reused from the original's spectrograms are the same bytes."""
from dataclasses import replace

import numpy as np
import pytest

import genrekit.data_tools.pipeline as pipeline
from genrekit.data_tools import augment
from genrekit.data_tools.audio import load_audio
from genrekit.data_tools.augment import (
    AugmentConfig,
    Variant,
    apply_waveform,
    magnitude_stft,
    spec_transform_for,
    spectral_variant,
    variant_clip_mel_power,
    variant_magnitude,
    variant_rng,
)
from genrekit.data_tools.features import FeatureConfig, extract, mel_db
from genrekit.data_tools.pipeline import run_augment
from tests.conftest import GTZAN_MINI, small_features, tone

SR = 22050


def harmonic_tone(f0: float, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in (1, 2, 3))
    return y.astype(np.float32)


def clicks(bpm: float, seconds: float = 10.0, sr: int = SR) -> np.ndarray:
    rng = np.random.default_rng(1)
    y = 0.01 * rng.standard_normal(int(seconds * sr))
    burst = rng.standard_normal(int(0.02 * sr)) * np.hanning(int(0.02 * sr))
    for start in np.arange(0.1, seconds - 0.1, 60.0 / bpm):
        i = int(start * sr)
        y[i:i + len(burst)] += burst
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def tempo_bpm(db: np.ndarray, sr: int, hop: int, near_bpm: float = 120.0) -> float:
    """librosa's tempo estimate, its prior centred on ``near_bpm`` (the estimate is the strongest
    periodicity of the onsets weighted by a one-octave log-normal prior: the weighting settles
    which metrical level is reported, the periodicities themselves come from the audio)."""
    import librosa

    env = librosa.onset.onset_strength(S=db, sr=sr, hop_length=hop)
    return float(librosa.feature.tempo(onset_envelope=env, sr=sr, hop_length=hop, start_bpm=near_bpm)[0])


def test_magnitude_stft_is_librosas_centred_stft_in_chunks(monkeypatch):
    import librosa

    y = tone(440.0, 1.3, sr=8000)
    want = np.abs(librosa.stft(y, n_fft=256, hop_length=64, center=True, pad_mode="constant"))
    monkeypatch.setattr(augment, "_CHUNK_FRAMES", 7)  # chunk edges inside the clip
    got = magnitude_stft(y, 256, 64)
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ratio", [1.0, 2 ** (2 / 12), 2 ** (-1 / 12)])
@pytest.mark.parametrize("rate", [1.0, 1.25, 0.85])
def test_variant_magnitude_is_linear_interpolation_in_time_then_frequency(rate, ratio):
    rng = np.random.default_rng(0)
    mag = rng.random((65, 90)).astype(np.float32)
    pos = np.arange(int(90 / rate)) * rate
    pos[-3:] = np.nan  # silence (constant padding)
    before = mag.copy()
    got = variant_magnitude(mag, pos, ratio)
    in_time = np.stack([np.interp(np.nan_to_num(pos), np.arange(90), row) for row in mag])
    src = np.arange(65) / ratio
    want = np.stack([np.interp(src, np.arange(65), col, right=0.0) for col in in_time.T], axis=1)
    want[:, -3:] = 0.0
    assert got.shape == (65, len(pos)) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.array_equal(mag, before)  # the original's STFT is shared by every variant: never written


@pytest.mark.parametrize("semitones", [2.0, -1.0, 7.0])
def test_pitch_shift_moves_the_chroma_peak_by_the_semitones(semitones):
    import librosa

    cfg = FeatureConfig()
    y = harmonic_tone(440.0)  # A4: chroma bin 9 (C = 0)
    mag = magnitude_stft(y, cfg.n_fft, cfg.hop_length)
    frames = np.arange(mag.shape[1], dtype=np.float64)
    before = librosa.feature.chroma_stft(S=mag ** 2, sr=SR, n_fft=cfg.n_fft).mean(axis=1)
    shifted = variant_magnitude(mag, frames, 2.0 ** (semitones / 12))
    after = librosa.feature.chroma_stft(S=shifted ** 2, sr=SR, n_fft=cfg.n_fft).mean(axis=1)
    assert int(np.argmax(before)) == 9
    assert int(np.argmax(after)) == (9 + int(semitones)) % 12
    # the rendered mel spectrogram peaks in the band of the shifted fundamental, as the waveform
    # back-end (audiomentations) puts it
    v = Variant(f"pitch_{semitones:+g}", "pitch", semitones)
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=SR / 2)[1:-1]
    peak = centres[np.argmax(variant_clip_mel_power(mag, len(y), cfg, v).mean(axis=1))]
    wave_peak = centres[np.argmax(librosa.db_to_power(mel_db(apply_waveform(y, SR, v), cfg)).mean(axis=1))]
    assert abs(np.log2(peak / (440.0 * 2 ** (semitones / 12)))) < 0.05  # within a semitone
    assert peak == wave_peak


@pytest.mark.parametrize("rate", [1.25, 0.85])
def test_stretch_multiplies_the_tempo_by_the_rate(rate):
    import librosa

    cfg = FeatureConfig(n_fft=1024, hop_length=128)  # fine lags: the tempo estimate resolves 1 %
    y = clicks(120.0)
    mag = magnitude_stft(y, cfg.n_fft, cfg.hop_length)
    t0 = tempo_bpm(mel_db(y, cfg), SR, cfg.hop_length)
    power = variant_clip_mel_power(mag, len(y), cfg, Variant(f"stretch_x{rate:g}", "stretch", rate))
    db = librosa.power_to_db(power, ref=1.0, top_db=cfg.top_db)
    assert db.shape[1] == 1 + int(len(y) / rate) // cfg.hop_length
    t1 = tempo_bpm(db, SR, cfg.hop_length)
    assert abs(t0 - 120.0) < 2.0
    assert abs(t1 / t0 - rate) < 0.025, (t0, t1)


def _tiny_variants_cfg():
    return small_features(melspec_frames=20, musicnn_frames=20, mfcc_hop_seconds=0.512)  # 32 hops


@pytest.mark.parametrize("kind", ["mel", "mfcc", "melspec", "musicnn"])
def test_unit_factors_give_the_originals_features(kind):
    """A stretch by 1 read from the STFT is the original as extract renders it (up to the frames
    at a segment's edge, which extract pads with zeros): the spectral path computes the same
    feature as extract, with the same segments."""
    cfg = _tiny_variants_cfg()
    y = tone(500.0, 3.3, sr=cfg.sr) + 0.3 * tone(1500.0, 3.3, sr=cfg.sr, seed=2)
    want = extract(y, cfg, kind)
    got = spectral_variant(magnitude_stft(y, cfg.n_fft, cfg.hop_length), len(y), cfg, kind,
                           Variant("stretch_x1", "stretch", 1.0))
    assert [(s.index, s.start_s, s.padded_s) for s, _ in got] == [(s.index, s.start_s, s.padded_s) for s, _ in want]
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if kind in ("melspec", "musicnn"):  # the same whole-clip spectrogram
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-3)
        else:
            spread = float(np.ptp(w.astype(np.float64)))
            inner = slice(2, -2) if kind == "mfcc" else slice(None)
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))[inner]
            assert diff.mean() < 0.01 * spread, diff.mean()


@pytest.mark.parametrize("kind", ["mel", "mfcc", "melspec"])
@pytest.mark.parametrize("rate", [1.25, 0.85, 0.5])
def test_stretched_segments_are_the_waveform_stretchs(kind, rate):
    """Segments, starts and padding of a stretched variant are those of the stretched waveform
    (audiomentations gives int(n / rate) samples), wrap padding included."""
    cfg = _tiny_variants_cfg()
    y = tone(500.0, 2.3, sr=cfg.sr)
    v = Variant(f"stretch_x{rate:g}", "stretch", rate)
    wave = apply_waveform(y, cfg.sr, v)
    assert len(wave) == int(len(y) / rate)
    want = extract(wave, cfg, kind)
    got = spectral_variant(magnitude_stft(y, cfg.n_fft, cfg.hop_length), len(y), cfg, kind, v)
    assert [(s.index, s.start_s, s.padded_s) for s, _ in got] == [(s.index, s.start_s, s.padded_s) for s, _ in want]
    assert all(g.shape == w.shape and g.dtype == w.dtype for (_, g), (_, w) in zip(got, want, strict=True))


def _render_all(y, cfg, ac, kinds):
    clip = pipeline._ClipVariants(y, cfg, ac, keep_spectra=True)
    out = {}
    for v in ac.variants():
        rng = variant_rng(0, "t", v.name)
        for kind in kinds:
            out[(v.name, kind)] = clip.features(v, kind, rng)
    return out


def _render_from_waveforms(y, cfg, ac, kinds):
    """Every variant rendered the straightforward way: its waveform through extract."""
    out = {}
    for v in ac.variants():
        rng = variant_rng(0, "t", v.name)
        z = apply_waveform(y, cfg.sr, v)
        for kind in kinds:
            out[(v.name, kind)] = extract(z, cfg, kind, spec_transform=spec_transform_for(v, ac), rng=rng)
    return out


def test_masks_from_the_kept_spectrograms_are_the_same_bytes():
    cfg = _tiny_variants_cfg()
    ac = AugmentConfig(augmentations=("freqmask", "timemask"), freq_mask_bands=8, time_mask_frames=6, masks=2)
    kinds = ("mel", "mfcc", "melspec", "musicnn", "tempogram")
    y = tone(500.0, 3.3, sr=cfg.sr) + 0.3 * tone(1500.0, 3.3, sr=cfg.sr, seed=2)
    fast, slow = _render_all(y, cfg, ac, kinds), _render_from_waveforms(y, cfg, ac, kinds)
    assert fast.keys() == slow.keys() and len(fast) == 15
    for key in fast:
        assert len(fast[key]) == len(slow[key]) > 0
        for (s1, f1), (s2, f2) in zip(fast[key], slow[key], strict=True):
            assert (s1.index, s1.start_s, s1.padded_s) == (s2.index, s2.start_s, s2.padded_s)
            assert f1.dtype == f2.dtype and f1.tobytes() == f2.tobytes(), key
    masked = [k for k in fast if k[0] != "original"]
    assert any(fast[k][0][1].tobytes() != fast[("original", k[1])][0][1].tobytes() for k in masked)


def test_tempogram_and_long_clips_take_the_waveform_path(monkeypatch):
    cfg = _tiny_variants_cfg()
    ac = AugmentConfig(augmentations=("stretch", "pitch"), stretch_rates=(1.25,), pitch_semitones=(2.0,))
    y = tone(500.0, 3.3, sr=cfg.sr)
    slow = _render_from_waveforms(y, cfg, ac, ("mel", "tempogram"))
    fast = _render_all(y, cfg, ac, ("mel", "tempogram"))
    for name in ("stretch_x1.25", "pitch_+2"):
        assert fast[(name, "tempogram")][0][1].tobytes() == slow[(name, "tempogram")][0][1].tobytes()
        assert fast[(name, "mel")][0][1].tobytes() != slow[(name, "mel")][0][1].tobytes()  # from the STFT
    asked = _render_all(y, cfg, replace(ac, variant_source="waveform"), ("mel",))
    monkeypatch.setattr(pipeline, "SPECTRAL_MAX_BYTES", 0)  # a clip too long to hold its STFT
    long = _render_all(y, cfg, ac, ("mel",))
    for name in ("stretch_x1.25", "pitch_+2"):
        assert asked[(name, "mel")][0][1].tobytes() == slow[(name, "mel")][0][1].tobytes()
        assert long[(name, "mel")][0][1].tobytes() == slow[(name, "mel")][0][1].tobytes()


def test_a_folder_made_from_waveforms_is_not_resumed_from_the_stft(audio_tree, tmp_path):
    from genrekit.data_tools.errors import DataError
    from tests.conftest import small_settings

    ac = AugmentConfig(augmentations=("pitch",), pitch_semitones=(1.0,), variant_source="waveform")
    run_augment(audio_tree, tmp_path / "f", small_settings(augment=ac, kinds=("mel",)), progress=False)
    with pytest.raises(DataError, match="other settings"):
        run_augment(audio_tree, tmp_path / "f", small_settings(augment=replace(ac, variant_source="stft"),
                                                                 kinds=("mel",)), progress=False)
    with pytest.raises(DataError, match="unknown variant source"):
        AugmentConfig(variant_source="rubberband")


@pytest.fixture
def real_clip():
    if not GTZAN_MINI.is_dir():
        pytest.skip("../shared/data/gtzan_mini is not available")
    return load_audio(GTZAN_MINI / "country" / "country.00005.wav", sr=SR).y


def test_real_clip_tempo_follows_the_stretch(real_clip):
    import librosa

    cfg = FeatureConfig(hop_length=256)
    mag = magnitude_stft(real_clip, cfg.n_fft, cfg.hop_length)
    t0 = tempo_bpm(mel_db(real_clip, cfg), SR, cfg.hop_length)
    for rate in (1.25, 0.85):
        v = Variant(f"stretch_x{rate:g}", "stretch", rate)
        db = librosa.power_to_db(variant_clip_mel_power(mag, len(real_clip), cfg, v), ref=1.0, top_db=80)
        t1 = tempo_bpm(db, SR, cfg.hop_length, near_bpm=t0 * rate)
        assert abs(t1 / t0 - rate) < 0.04 * rate, (rate, t0, t1)
        # the same estimate as from audiomentations' stretched waveform
        assert t1 == tempo_bpm(mel_db(apply_waveform(real_clip, SR, v), cfg), SR, cfg.hop_length, t0 * rate)


def test_real_clip_variants_agree_with_the_waveform_back_end(real_clip):
    """The mel image of each variant read from the STFT is close to the one rendered from
    audiomentations' waveform (signalsmith stretch), and far from the original's."""
    cfg = FeatureConfig()
    mag = magnitude_stft(real_clip, cfg.n_fft, cfg.hop_length)
    orig = extract(real_clip, cfg, "mel")[0][1].astype(np.float64)
    for v in AugmentConfig().variants():
        if v.family not in ("stretch", "pitch"):
            continue
        wave = extract(apply_waveform(real_clip, SR, v), cfg, "mel")[0][1].astype(np.float64)
        spec = spectral_variant(mag, len(real_clip), cfg, "mel", v)[0][1].astype(np.float64)
        assert np.corrcoef(wave.ravel(), spec.ravel())[0, 1] > 0.98, v.name
        assert np.abs(wave - spec).mean() < 0.4 * np.abs(wave - orig).mean(), v.name
