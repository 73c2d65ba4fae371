"""The feature-kind registry (issue 14): every kind renders, stores and loads itself; a kind
registered in one place flows through augment, the manifest and the loaders; the CLI's
--features choices and defaults are the registry's and the config dataclasses'."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from genrekit.data_tools import features
from genrekit.data_tools.augment import AugmentConfig
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.features import (
    FEATURE_KINDS,
    MELSPEC_64X400_FEATURES,
    MUSICNN_FEATURES,
    FeatureConfig,
    FeatureKind,
    Windows,
    default_kinds,
    extract,
    feature_config_for,
    frame_windows,
    get_kind,
    kind_names,
    register_kind,
)
from genrekit.data_tools.fsio import is_temporary
from tests.conftest import GTZAN_MINI, small_features, write_tree

# small settings per kind, so that 12 s of real audio gives at least one window of each
SMALL = {"mel": dict(image_seconds=5.0, image_height=64, image_width=48),
         "mfcc": {}, "musicnn": dict(MUSICNN_FEATURES), "melspec": dict(MELSPEC_64X400_FEATURES),
         "tempogram": dict(tempo_frames=32, tempo_hop_frames=16)}


@pytest.fixture(scope="module")
def real_clip():
    files = sorted(GTZAN_MINI.glob("*/*.wav")) if GTZAN_MINI.is_dir() else []
    if not files:
        pytest.skip("../shared/data/gtzan_mini is not available")
    return files[0]


def test_the_builtin_kinds_are_registered_in_order():
    assert kind_names()[:5] == FEATURE_KINDS == ("mel", "mfcc", "musicnn", "melspec", "tempogram")
    assert default_kinds() == ("mel", "mfcc")
    with pytest.raises(DataError, match="unknown feature kind 'chroma' \\(known: mel, mfcc, musicnn"):
        get_kind("chroma")
    with pytest.raises(DataError, match="registered already"):
        register_kind(get_kind("mel"))


@pytest.mark.parametrize("name", FEATURE_KINDS)
def test_every_kind_round_trips_render_store_load_on_real_audio(name, real_clip, tmp_path):
    from genrekit.data_tools.audio import load_audio

    kind = get_kind(name)
    cfg = FeatureConfig(**SMALL[name])
    y = load_audio(real_clip, sr=cfg.sr).y[: 12 * cfg.sr]
    segs = extract(y, cfg, name)
    assert segs, name
    for seg, feat in segs:
        assert feat.shape == cfg.feature_shape(name) == kind.shape(cfg)
        assert feat.dtype == (np.uint8 if kind.image else np.float32)
        rel = kind.relpath("blues/blues.00000", "original", seg.index)
        assert rel == f"{name}/blues/blues.00000.original.{seg.index:03d}.{kind.storage.suffix}"
        path = tmp_path / rel
        kind.store(path, feat)
        assert path.is_file() and not [p for p in path.parent.iterdir() if is_temporary(p.name)]
        back = kind.load(path)
        assert back.dtype == np.float32 and back.shape == kind.input_shape(cfg)
        assert np.array_equal(back, kind.to_input(feat))  # the file gives what predict computes in memory
        if kind.image:
            assert np.array_equal(back[..., 0], feat.astype(np.float32) / 255.0)
        else:
            assert back.tobytes() == feat.tobytes()
    w = cfg.windows(name)
    assert w.seconds == cfg.seconds(name) and cfg.segment_samples(name) == int(round(w.seconds * cfg.sr))


def test_window_geometry_in_samples():
    cfg = FeatureConfig(**MUSICNN_FEATURES)
    assert cfg.windows("musicnn").samples(cfg.sr) == (187 * 256, 187 * 256)
    cfg = FeatureConfig(mfcc_seconds=3.0, mfcc_hop_seconds=1.5)
    assert cfg.windows("mfcc").samples(cfg.sr) == (3 * 22050, int(1.5 * 22050))
    cfg = FeatureConfig(image_segments=4)
    assert cfg.windows("mel").samples(cfg.sr) == (30 * 22050, 30 * 22050)  # evenly spaced: no fixed hop
    cfg = FeatureConfig()
    assert cfg.windows("tempogram").samples(cfg.sr) == (128 * 8 * 256, 64 * 8 * 256)


def test_feature_config_for_takes_the_kinds_own_spectrogram_settings():
    assert feature_config_for(("mel", "mfcc")) == FeatureConfig()
    assert feature_config_for(("musicnn",)) == FeatureConfig(**MUSICNN_FEATURES)
    assert feature_config_for(("melspec", "tempogram")) == FeatureConfig(**MELSPEC_64X400_FEATURES)
    assert feature_config_for(("melspec", "musicnn")) == FeatureConfig(**MUSICNN_FEATURES)  # registry order
    assert feature_config_for(("musicnn",), sr=22050, n_mels=None) == FeatureConfig(**{**MUSICNN_FEATURES,
                                                                                        "sr": 22050})
    with pytest.raises(DataError, match="unknown feature kind"):
        feature_config_for(("mel", "chroma"))


# -- the settings: shared spectrogram settings and one record per kind ---------------------------

# the keys of feature_config.json (every feature folder and run holds one), in to_dict's order
FLAT_KEYS = ("sr", "n_fft", "hop_length", "n_mels", "fmin", "fmax", "top_db", "image_height", "image_width",
             "image_seconds", "image_hop_seconds", "image_segments", "n_mfcc", "mfcc_seconds", "mfcc_hop_seconds",
             "mfcc_segments", "pad_mode", "musicnn_frames", "musicnn_hop_frames", "melspec_frames",
             "melspec_hop_frames", "tempo_hop_length", "tempo_ac_frames", "tempo_bins", "tempo_bpm_min",
             "tempo_bpm_max", "tempo_step_frames", "tempo_frames", "tempo_hop_frames")


def test_feature_config_is_shared_settings_and_a_record_per_kind():
    cfg = FeatureConfig()
    assert tuple(cfg.to_dict()) == FLAT_KEYS and set(features.SHARED_SETTINGS) <= set(FLAT_KEYS)
    assert cfg.fingerprint() == "2cd19f6fd63ff67d"  # as before the split: every folder keeps loading
    assert FeatureConfig(**MUSICNN_FEATURES).fingerprint() == "d72b4acaac507858"
    assert cfg.of("mel") == features.MelImageSettings() == get_kind("mel").settings
    assert cfg.of("musicnn") == features.FrameWindowSettings(187) and cfg.of("melspec").frames == 400
    assert get_kind("mfcc").flat_names() == {"n_mfcc": "n_mfcc", "seconds": "mfcc_seconds",
                                             "hop_seconds": "mfcc_hop_seconds", "segments": "mfcc_segments"}
    assert get_kind("tempogram").flat_names()["bpm_min"] == "tempo_bpm_min"
    # built from flat names (the CLI, feature_config.json) or from records: the same config
    small = FeatureConfig(image_height=64, tempo_bins=32)
    assert small == FeatureConfig(settings={"mel": features.MelImageSettings(height=64),
                                            "tempogram": features.TempogramSettings(bins=32)})
    assert small.of("mel").height == small.flat("image_height") == 64 and small.of("mel").width == 256
    assert FeatureConfig.from_dict(small.to_dict()) == small and hash(small) == hash(FeatureConfig.from_dict(small.to_dict()))
    assert small.with_settings("mel", height=32) == dataclasses.replace(small, image_height=32)
    assert FeatureConfig(image_height=256) == cfg and cfg.kind_settings == ()  # defaults are not stored
    with pytest.raises(DataError, match="bad feature settings: image size must be at least 8x8"):
        cfg.with_settings("mel", width=4)
    with pytest.raises(DataError, match="feature config has unknown keys: height"):
        FeatureConfig.from_dict({"height": 3})
    with pytest.raises(TypeError):
        FeatureConfig(height=3)


@dataclasses.dataclass(frozen=True)
class ToySettings:
    frames: int = 16
    gain: float = 1.0


def test_a_kind_declares_its_own_settings_record():
    toy = dataclasses.replace(TOY, name="gained", settings=ToySettings())
    register_kind(toy)
    try:
        cfg = FeatureConfig(gained_gain=2.0)
        assert cfg.of("gained") == ToySettings(gain=2.0) and cfg.flat("gained_frames") == 16
        d = cfg.to_dict()
        assert tuple(d)[:len(FLAT_KEYS)] == FLAT_KEYS and (d["gained_frames"], d["gained_gain"]) == (16, 2.0)
        assert FeatureConfig.from_dict(d) == cfg
        with pytest.raises(DataError, match="setting name\\(s\\) gained_frames, gained_gain are taken already"):
            register_kind(dataclasses.replace(toy, name="other", settings_prefix="gained_"))
    finally:
        features.unregister_kind("gained")
    assert "gained_gain" not in FeatureConfig().to_dict()
    with pytest.raises(TypeError):
        FeatureConfig(gained_gain=2.0)


# -- a kind registered by a test, known to no other file ---------------------------------------

TOY_FRAMES = 16


def _render_rms(y, cfg, spec_transform, rng):
    """Frame RMS energy (1 band) in windows of TOY_FRAMES frames."""
    n = max(1, len(y) // cfg.hop_length)
    frames = y[: n * cfg.hop_length].reshape(n, cfg.hop_length)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))[None, :].astype(np.float32)
    return frame_windows(rms, cfg, TOY_FRAMES, None, spec_transform, rng)


TOY = FeatureKind(
    "rms", "frame RMS energy windows (a test's kind)", render=_render_rms,
    windows=lambda cfg: Windows(TOY_FRAMES * cfg.hop_length / cfg.sr, frames=TOY_FRAMES,
                                frame_samples=cfg.hop_length),
    shape=lambda cfg: (TOY_FRAMES, 1),
    work_bytes=lambda cfg, secs: int(secs * cfg.sr) * 8)


@pytest.fixture
def toy_kind():
    register_kind(TOY)
    try:
        yield TOY
    finally:
        features.unregister_kind(TOY.name)  # the registry as it was


def test_a_registered_kind_flows_through_augment_manifest_and_loaders(toy_kind, tmp_path, capsys):
    from genrekit.cli import main
    from genrekit.data_tools.loaders import load_arrays, load_feature, make_dataset, select
    from genrekit.data_tools.manifest import read_manifest
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    assert "rms" in kind_names() and "rms" not in default_kinds()
    data = write_tree(tmp_path / "data", per_genre=3, seconds=1.5)
    settings = AugmentSettings(features=small_features(), kinds=("mel", "rms"), ratios=(60, 20, 20), seed=1,
                               augment=AugmentConfig(augmentations=("timemask",), time_mask_frames=4))
    s = run_augment(data, tmp_path / "feats", settings, workers=1, progress=False)
    assert s.ok == 9 and s.skipped_bad == 0
    rows = read_manifest(tmp_path / "feats")
    toy_rows = [r for r in rows if r["feature"] == "rms"]
    assert {r["augmentation"] for r in toy_rows} == {"original", "timemask"}
    assert all(r["path"].startswith("rms/") and r["path"].endswith(".npy") for r in toy_rows)
    # the same track's segments in the mel and rms folders, side by side
    assert {r["track_id"] for r in toy_rows} == {r["track_id"] for r in rows if r["feature"] == "mel"}
    train = select(rows, "rms", ("train",))
    x = load_arrays(tmp_path / "feats", train, "rms")
    assert x.shape == (len(train), TOY_FRAMES, 1) and x.dtype == np.float32 and np.all(x >= 0)
    one = load_feature(tmp_path / "feats" / train[0]["path"], "rms")
    assert np.array_equal(one, x[0])
    ds = make_dataset(tmp_path / "feats", train, np.zeros(len(train), np.int32), "rms", batch_size=4,
                      shuffle=False, seed=0)
    got = np.concatenate([b[0].numpy() for b in ds])
    assert np.array_equal(got, x)
    # a rerun finds every track finished; the CLI offers the kind
    again = run_augment(data, tmp_path / "feats", settings, workers=1, progress=False)
    assert again.resumed == 9
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["augment", "--help"])
    assert "rms (frame RMS energy windows" in " ".join(capsys.readouterr().out.split())


# -- a kind made from the mel power spectrogram: augment's fast path serves it ------------------

BANDS = 4  # the toy's bands: the mel bands pooled into four
CALLS = {"from_power": 0, "to_feature": 0}


def _bands_from_power(power, cfg):
    """Mel power pooled into BANDS bands, in dB."""
    CALLS["from_power"] += 1
    return features.power_db(power.reshape(BANDS, -1, power.shape[1]).mean(axis=1), cfg)


def _bands_to_feature(spec, cfg):
    CALLS["to_feature"] += 1
    return features.time_first(spec, cfg)


SPECTRAL_TOY = FeatureKind(
    "bands", "four-band dB windows (a test's kind)", render=features.spectral_render("bands"),
    windows=lambda cfg: Windows(TOY_FRAMES * cfg.hop_length / cfg.sr, frames=TOY_FRAMES,
                                frame_samples=cfg.hop_length),
    shape=lambda cfg: (TOY_FRAMES, BANDS),
    work_bytes=lambda cfg, secs: cfg.stft_bytes(secs),
    spectral=features.Spectral(_bands_from_power, _bands_to_feature))


def test_a_kind_with_a_spectral_path_gets_its_variants_from_the_stft(tmp_path, monkeypatch):
    """A kind declaring how it is made from the mel power spectrogram gets stretch, pitch and
    mask variants through augment's fast path (no waveform made, no variant rendered again),
    with nothing but its FeatureKind."""
    from genrekit.data_tools import pipeline
    from genrekit.data_tools.loaders import load_feature
    from genrekit.data_tools.manifest import read_manifest
    from genrekit.data_tools.pipeline import AugmentSettings, run_augment

    register_kind(SPECTRAL_TOY)
    try:
        seen = {"extract": 0, "waveform": 0, "spectral_variant": 0}

        def counting(name, f):
            def wrapper(*a, **kw):
                seen[name] += 1
                return f(*a, **kw)
            return wrapper

        monkeypatch.setattr(pipeline, "extract", counting("extract", pipeline.extract))
        monkeypatch.setattr(pipeline, "apply_waveform", counting("waveform", pipeline.apply_waveform))
        monkeypatch.setattr(pipeline, "spectral_variant", counting("spectral_variant", pipeline.spectral_variant))
        CALLS.update(from_power=0, to_feature=0)
        data = write_tree(tmp_path / "data", per_genre=2, seconds=1.5)
        settings = AugmentSettings(features=small_features(), kinds=("bands",), ratios=(100, 0, 0), seed=1,
                                   augment=AugmentConfig(freq_mask_bands=2, time_mask_frames=4))
        s = run_augment(data, tmp_path / "feats", settings, workers=1, progress=False)
        assert s.ok == 6 and s.skipped_bad == 0
        rows = read_manifest(tmp_path / "feats")
        names = {v.name for v in settings.augment.variants()}
        assert names == {"original", "stretch_x1.25", "stretch_x0.85", "pitch_+2", "pitch_-1", "freqmask", "timemask"}
        by = {(r["track_id"], r["augmentation"], r["segment"]): r["path"] for r in rows}
        for tid in {r["track_id"] for r in rows}:
            original = load_feature(tmp_path / "feats" / by[(tid, "original", "0")], "bands")
            assert original.shape == (TOY_FRAMES, BANDS)
            for name in names - {"original"}:
                x = load_feature(tmp_path / "feats" / by[(tid, name, "0")], "bands")
                assert x.shape == original.shape and not np.array_equal(x, original), (tid, name)
        # the fast path: one render (the original) per track; the four stretch / pitch variants
        # read from its STFT, the two masks from the spectrograms it kept; no waveform made
        assert seen == {"extract": 6, "waveform": 0, "spectral_variant": 6 * 4}
        assert CALLS["from_power"] == 6 * 5  # the original's render and the four STFT variants
        assert CALLS["to_feature"] == sum(r["augmentation"] in ("freqmask", "timemask") for r in rows)
    finally:
        features.unregister_kind(SPECTRAL_TOY.name)


def test_an_unregistered_kind_is_refused_before_anything_is_written(tmp_path):
    from genrekit.data_tools.pipeline import AugmentSettings

    with pytest.raises(DataError, match="unknown feature kind\\(s\\) rms \\(known: mel, mfcc"):
        AugmentSettings(kinds=("mel", "rms"))


# -- the CLI's defaults are the dataclasses' ----------------------------------------------------

def _augment_args(*extra):
    from genrekit.cli import build_parser

    return build_parser().parse_args(["augment", "--data", "d", "--out", "o", *extra])


def test_cli_and_python_api_share_one_default():
    from genrekit.commands.augment import default_augmentations as _default_augmentations
    from genrekit.commands.augment import feature_config as _feature_config
    from genrekit.data_tools.pipeline import AugmentSettings

    a, d = _augment_args(), AugmentSettings()
    assert a.features == d.kinds == ("mel", "mfcc")
    assert _feature_config(a, a.features) == d.features == FeatureConfig()
    assert (a.seed, a.min_seconds, a.max_seconds) == (d.seed, d.min_seconds, d.max_seconds)
    assert a.augment is None  # no --augment: the default of the kinds asked for (none for musicnn alone)
    assert _default_augmentations(("musicnn",)) == ()
    assert (_default_augmentations(a.features), a.stretch_rates, a.pitch_semitones, a.freq_mask, a.time_mask, a.masks) == (
        d.augment.augmentations, d.augment.stretch_rates, d.augment.pitch_semitones,
        d.augment.freq_mask_bands, d.augment.time_mask_frames, d.augment.masks)
    assert a.ratios is None and d.ratios == (70, 20, 10) and d.split is None


@pytest.mark.parametrize("argv, want", [
    (["--features", "musicnn"], FeatureConfig(**MUSICNN_FEATURES)),
    (["--features", "melspec,tempogram"], FeatureConfig(**MELSPEC_64X400_FEATURES)),
    (["--features", "musicnn", "--sr", "22050", "--image-size", "32x48", "--mfcc-hop", "0.5"],
     FeatureConfig(**{**MUSICNN_FEATURES, "sr": 22050}, image_height=32, image_width=48, mfcc_hop_seconds=0.5)),
])
def test_cli_feature_options_over_the_kinds_settings(argv, want):
    from genrekit.commands.augment import feature_config as _feature_config

    a = _augment_args(*argv)
    assert _feature_config(a, a.features) == want


@pytest.mark.parametrize("name", FEATURE_KINDS)
def test_every_kind_sets_its_hop_and_describes_itself(name):
    kind, cfg = get_kind(name), FeatureConfig(image_segments=3, mfcc_segments=2)
    assert kind.with_hop(cfg, None) is cfg
    moved = kind.with_hop(cfg, 1.5)
    length, hop = moved.windows(name).samples(moved.sr)
    assert length == cfg.windows(name).samples(cfg.sr)[0]  # the window is unchanged ...
    frame = moved.windows(name).frame_samples or 1
    assert abs(hop - 1.5 * moved.sr) <= frame / 2 + 1  # ... its hop is 1.5 s (to the nearest frame)
    words = kind.describe(cfg)
    assert words and (f"sr={cfg.sr}" in words or name == "tempogram")


def test_a_kind_without_hop_or_formula(toy_kind):
    cfg = FeatureConfig()
    assert "frame RMS energy windows" in toy_kind.describe(cfg)
    with pytest.raises(DataError, match="no adjustable hop"):
        toy_kind.with_hop(cfg, 1.0)
