"""``genrekit gan train|generate``: a conditional GAN for MFCC sequences."""
from __future__ import annotations

import argparse

from genrekit.evaluation.gan_quality import format_quality
from genrekit.gan import gan_generate, gan_train


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``gan`` parser and its actions."""
    gan = sub.add_parser("gan", help="conditional GAN for MFCC sequences (train, generate)")
    gsub = gan.add_subparsers(dest="gan_command", metavar="ACTION", parser_class=type(gan),
                              required=True)
    gt = gsub.add_parser("train",
                         help="train a conditional GAN on the training split's MFCC sequences")
    gt.add_argument("--data", required=True, help="feature folder with MFCC features")
    gt.add_argument("--out", default=None, help="GAN run folder (default runs/gan-train-<time>)")
    gt.add_argument("--epochs", type=int, default=100)
    gt.add_argument("--batch-size", type=int, default=64)
    gt.add_argument("--latent-dim", type=int, default=100)
    gt.add_argument("--seed", type=int, default=0)
    gt.add_argument("--quiet", action="store_true")
    gg = gsub.add_parser("generate",
                         help="write synthetic sequences as a train-only feature folder")
    gg.add_argument("--model", required=True, help="GAN run folder")
    gg.add_argument("--per-genre", type=int, required=True)
    gg.add_argument("--out", required=True)
    gg.add_argument("--seed", type=int, default=0)
    return gan


def _train(a) -> int:
    res = gan_train(a.data, out=a.out, epochs=a.epochs, batch_size=a.batch_size,
                    latent_dim=a.latent_dim,
                    seed=a.seed, verbose=0 if a.quiet else 2)
    print(f"GAN run: {res['run']}")
    print(format_quality(res["quality"]), end="")
    return 0


def _generate(a) -> int:
    res = gan_generate(a.model, a.per_genre, a.out, seed=a.seed)
    print(f"{res['rows']} synthetic MFCC sequences (train split only) in {res['out']}")
    return 0


ACTIONS = {"train": _train, "generate": _generate}


def run(a) -> int:
    """Run the action asked for."""
    return ACTIONS[a.gan_command](a)
