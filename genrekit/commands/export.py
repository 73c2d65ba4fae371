"""``genrekit export``: a run as a bundle (or one model file)."""
from __future__ import annotations

import argparse
from pathlib import Path

from genrekit.errors import UserError
from genrekit.export import FORMATS as EXPORT_FORMATS
from genrekit.export import SUFFIX_FORMATS, export, export_bundle
from genrekit.options import names


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``export`` parser."""
    ex = sub.add_parser("export",
                        help="export a run as a bundle: model (.keras, SavedModel, TFLite, ONNX), "
                             "labels, feature config, calibration, model card")
    ex.add_argument("--model", required=True, help="run folder")
    ex.add_argument("--format", type=names, default=("keras",),
                    help="keras,saved_model,tflite,onnx (default keras); several go into one "
                         "bundle")
    ex.add_argument("--out", default=None,
                    help="bundle folder (default RUN/export/); a path ending in .keras, .tflite "
                         "or .onnx writes that model file alone")
    return ex


def run(a) -> int:
    """Export; print what was written."""
    unknown = [f for f in a.format if f not in EXPORT_FORMATS]
    if unknown or not a.format:
        raise UserError(f"unknown export format {', '.join(unknown) or repr('')} (known: "
                        f"{', '.join(EXPORT_FORMATS)})")
    suffix = Path(a.out).suffix.lower() if a.out else ""
    if suffix in SUFFIX_FORMATS:  # --out model.onnx: the model file alone, no bundle
        if list(a.format) != [SUFFIX_FORMATS[suffix]]:
            raise UserError(f"--out {a.out} names one {SUFFIX_FORMATS[suffix]} file; give --format "
                            f"{SUFFIX_FORMATS[suffix]} alone, or a folder --out for a bundle of "
                            "several formats")
        print(f"{a.format[0]}: {export(a.model, a.format[0], a.out)} (model file only; a folder "
              "--out, or none, writes the bundle with labels, feature config, calibration and "
              "model card)")
        return 0
    out = export_bundle(a.model, a.format, a.out)
    print(f"bundle: {out}")
    for name in sorted(p.name for p in out.iterdir()):
        print(f"  {name}")
    return 0
