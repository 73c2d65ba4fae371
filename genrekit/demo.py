"""``genrekit demo``: the whole pipeline on a small synthetic set, with no downloads.

The music is synthetic (see :mod:`genrekit.synth`): four made-up genres generated in code.
Its numbers show that the pipeline works, not how well a model does on real music.
"""
from __future__ import annotations

import sys
from pathlib import Path

from genrekit.synth import SYNTH_GENRES, write_synthetic_set


def _say(msg: str) -> None:
    print(msg, flush=True)


def demo_settings():
    from data_tools.features import FeatureConfig
    from data_tools.pipeline import AugmentSettings

    # 10 s clips, two 5 s images per clip at 128x128: small enough for 2 CPU cores
    fc = FeatureConfig(image_height=128, image_width=128, image_seconds=5.0)
    return AugmentSettings(features=fc, split="60/20/20", seed=0)


def run_demo(out, workers: int = 2, quick: bool = False) -> dict:
    from data_tools.pipeline import run_augment

    out = Path(out)
    per_genre = 6 if quick else 12
    _say("genrekit demo — NOTE: the audio is SYNTHETIC (four made-up genres generated in code: "
         f"{', '.join(SYNTH_GENRES)}); the figures below test the pipeline, not real-music accuracy.")
    data = write_synthetic_set(out / "data", per_genre=per_genre, seconds=10.0)
    _say(f"[1/2] synthetic audio: {per_genre} clips x {len(SYNTH_GENRES)} genres in {data}")
    s = run_augment(data, out / "features", demo_settings(), workers=workers,
                    progress=sys.stderr.isatty())
    _say(f"[2/2] augment: {s['ok']} tracks -> {s['files']} feature files; manifest {s['manifest']}, "
         f"report {out / 'features' / 'report.md'}")
    return {"data": str(data), "features": str(out / "features")}
