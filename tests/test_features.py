import numpy as np
import pytest

from genrekit.data_tools.augment import (
    AugmentConfig,
    Variant,
    apply_waveform,
    mask,
    spec_transform_for,
    variant_rng,
)
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.features import FeatureConfig, extract, segment_starts
from tests.conftest import small_features, tone


def test_segment_starts():
    assert segment_starts(100, 30, 15, None) == [0, 15, 30, 45, 60]
    assert segment_starts(100, 30, None, None) == [0, 30, 60]
    assert segment_starts(100, 30, None, 3) == [0, 35, 70]
    assert segment_starts(20, 30, 15, None) == [0]


def test_default_config_matches_the_studies():
    fc = FeatureConfig()
    assert (fc.sr, fc.n_fft, fc.hop_length, fc.of("mfcc").n_mfcc) == (22050, 2048, 512, 13)
    assert fc.feature_shape("mel") == (256, 256)
    assert fc.feature_shape("mfcc") == (130, 13)  # 3 s at hop 512


def test_mel_image_and_mfcc_shapes():
    fc = small_features()
    y = tone(440, 3.0)
    imgs = extract(y, fc, "mel")
    assert len(imgs) == 1 and imgs[0][1].shape == (32, 48) and imgs[0][1].dtype == np.uint8
    assert imgs[0][1].max() == 255  # the peak maps to white
    mf = extract(y, fc, "mfcc")
    assert [s.start_s for s, _ in mf] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert all(f.shape == fc.feature_shape("mfcc") and f.dtype == np.float32 for _, f in mf)


def test_low_frequencies_at_the_bottom():
    fc = small_features()
    img = extract(tone(150, 2.0), fc, "mel")[0][1].astype(float)
    assert int(np.argmax(img.mean(axis=1))) >= 3 * img.shape[0] // 4


def test_short_clip_is_padded_and_said():
    fc = small_features()
    (seg, img), = extract(tone(440, 1.5), fc, "mel")
    assert seg.padded_s == pytest.approx(0.5)
    assert img.shape == (32, 48)


def test_config_roundtrip_and_validation(tmp_path):
    fc = small_features()
    fc.save(tmp_path)
    assert FeatureConfig.load(tmp_path) == fc
    assert FeatureConfig.load(tmp_path).fingerprint() == fc.fingerprint()
    with pytest.raises(DataError):
        FeatureConfig(n_mfcc=0)


def test_specaugment_masks():
    rng = np.random.default_rng(0)
    db = np.random.default_rng(1).normal(size=(32, 50)).astype(np.float32)
    m = mask(db, rng, axis=0, max_width=8)
    rows = np.where(np.any(m != db, axis=1))[0]
    assert 1 <= len(rows) <= 8 and np.all(np.diff(rows) == 1)
    assert np.allclose(m[rows], db.mean())
    t = mask(db, rng, axis=1, max_width=10)
    cols = np.where(np.any(t != db, axis=0))[0]
    assert 1 <= len(cols) <= 10


def test_augmented_variants_differ_and_are_seeded():
    fc = small_features()
    ac = AugmentConfig(freq_mask_bands=8, time_mask_frames=10)
    y = tone(440, 2.0)
    base = extract(y, fc, "mel")[0][1]
    for v in ac.variants()[1:]:
        f1 = extract(apply_waveform(y, fc.sr, v), fc, "mel", spec_transform_for(v, ac),
                     variant_rng(0, "t", v.name))[0][1]
        f2 = extract(apply_waveform(y, fc.sr, v), fc, "mel", spec_transform_for(v, ac),
                     variant_rng(0, "t", v.name))[0][1]
        assert not np.array_equal(f1, base), v.name
        assert np.array_equal(f1, f2), v.name


def test_stretch_changes_duration():
    y = tone(440, 2.0)
    out = apply_waveform(y, 8000, Variant("stretch_x1.25", "stretch", 1.25))
    assert len(out) == pytest.approx(len(y) / 1.25, rel=0.02)


def test_unknown_augmentation():
    with pytest.raises(DataError, match="unknown augmentation"):
        AugmentConfig(augmentations=("reverse",))


@pytest.mark.parametrize("kw, words", [
    (dict(hop_length=1), "one mel segment would need 8.2 GiB"),
    (dict(mfcc_seconds=1e7), "mfcc_seconds 1e+07 is above 600 s"),
    (dict(image_seconds=float("nan")), "image_seconds nan"),
    (dict(image_height=100000), "image size 100000x256"),
    (dict(n_fft=1 << 20), "n_fft 1048576 is above"),
    (dict(musicnn_frames=10**9), "musicnn_frames must be between"),
    (dict(top_db=float("nan")), "top_db must be positive"),
])
def test_feature_settings_that_would_cost_gigabytes_are_refused(kw, words):
    with pytest.raises(DataError, match="bad feature settings") as e:
        FeatureConfig(**kw)
    assert words in str(e.value)


def test_feature_config_file_with_absurd_segment_is_refused(tmp_path):
    import json

    d = FeatureConfig().to_dict() | {"mfcc_seconds": 1e7}
    (tmp_path / "feature_config.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="mfcc_seconds"):
        FeatureConfig.load(tmp_path)


def test_extract_refuses_non_finite_spectrograms():
    from genrekit.data_tools.errors import FeatureError

    cfg = small_features()
    y = np.full(8000, 1e30, dtype=np.float32)
    for kind in ("mel", "mfcc", "melspec"):
        with pytest.raises(FeatureError, match="NaN or infinite"):
            extract(y, cfg, kind)


def test_augment_config_ranges_are_checked_up_front():
    with pytest.raises(DataError, match="pitch shift"):
        AugmentConfig(pitch_semitones=(1000.0,))
    with pytest.raises(DataError, match="time-stretch"):
        AugmentConfig(stretch_rates=(float("nan"),))
    with pytest.raises(DataError, match="at least one"):
        AugmentConfig(augmentations=("pitch",), pitch_semitones=())
