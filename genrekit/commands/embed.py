"""``genrekit embed``: per-window embeddings of audio files."""
from __future__ import annotations

import argparse
import sys

from genrekit import progress
from genrekit.embed import FORMATS as EMBED_FORMATS
from genrekit.embed import backbone_embedder, embed_files, run_embedder
from genrekit.errors import UserError
from genrekit.options import add_progress_args, names


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``embed`` parser."""
    em = sub.add_parser("embed", help="per-window embeddings of audio files (.npy / CSV with start "
                                      "times) from a run or a pretrained backbone")
    em.add_argument("files", nargs="+", help="audio files or folders (recursive)")
    em.add_argument("--model", default=None, help="run folder whose backbone embeds the windows")
    em.add_argument("--backbone", default=None,
                    help="a pretrained backbone instead of a run: musicnn")
    em.add_argument("--weights", default="msd",
                    help="--backbone musicnn: msd, mtt or none (random; for tests)")
    em.add_argument("--layer", default="penultimate",
                    help="--backbone musicnn: penultimate (200-d), pooled (1,506-d) or taggram "
                         "(50 tags)")
    em.add_argument("--format", type=names, default=("npy", "csv"), help="npy,csv (default both)")
    em.add_argument("--out", required=True,
                    help="folder for the embeddings (made new, or one embed made)")
    add_progress_args(em, quiet=None)
    return em


def run(a) -> int:
    """Embed every file; a file that fails is one error line (exit 2)."""
    if (a.model is None) == (a.backbone is None):
        raise UserError("give either --model RUN or --backbone musicnn")
    unknown = [f for f in a.format if f not in EMBED_FORMATS]
    if unknown or not a.format:
        raise UserError(f"unknown --format {', '.join(unknown) or repr('')} (known: {', '.join(EMBED_FORMATS)})")
    emb = run_embedder(a.model) if a.model else backbone_embedder(a.backbone, a.weights, a.layer)
    results = embed_files(a.files, a.out, emb, a.format, progress=progress.enabled())
    for r in results:
        if "error" in r:
            print(f"genrekit: error: {r['file']}: {r['error']}", file=sys.stderr)
        else:
            print(f"{r['file']}: {r['windows']} windows x {r['dims']} -> {', '.join(r['outputs'])}")
    return 2 if any("error" in r for r in results) else 0
