"""``genrekit gan train`` / ``gan generate``: synthetic MFCC sequences for data augmentation.

A GAN run folder holds ``generator.keras``, ``discriminator.keras``, ``config.json`` (task
"gan", labels, feature config, the standardisation statistics), ``history.csv`` (d_loss,
g_loss), ``real_vs_generated.png`` and ``quality.json``/``quality.md``. ``gan generate``
writes a feature folder of synthetic sequences whose manifest rows are all
``split=train, augmentation=synthetic``; ``genrekit train --synthetic DIR`` mixes them into
the training split only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genrekit.data_tools.features import FeatureConfig
from genrekit.data_tools.fsio import (
    loads_json,
    read_csv,
    save_npy_atomic,
    write_json_atomic,
    write_text_atomic,
)
from genrekit.data_tools.loaders import label_ids, load_arrays, select
from genrekit.data_tools.manifest import check_no_leak, read_manifest, write_manifest
from genrekit.errors import UserError
from genrekit.evaluation.gan_quality import format_quality, quality_report
from genrekit.evaluation.plots import plot_gan_losses, plot_real_vs_generated
from genrekit.runs import GAN_TASK, atomic_output, check_new_run_path, load_model, run_folder
from genrekit.training import (
    check_finite_features,
    check_finite_model,
    save_model,
    stop_on_non_finite_loss,
)


def _real_by_genre(x: np.ndarray, y: np.ndarray, labels: list[str]) -> dict:
    return {g: x[y == i] for i, g in enumerate(labels) if np.any(y == i)}


def gan_train(data, out=None, epochs: int = 100, batch_size: int = 64, latent_dim: int = 100, seed: int = 0,
              verbose: int = 2) -> dict:
    """Train the conditional MFCC GAN on a feature folder's training MFCC sequences; returns the
    run folder and its quality figures (``genrekit gan train``)."""
    import keras

    from genrekit.models.gan import ConditionalGAN, build_discriminator, build_generator

    for flag, v in (("--epochs", epochs), ("--batch-size", batch_size), ("--latent-dim", latent_dim)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UserError(f"{flag} must be a whole number of at least 1, got {v!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        raise UserError(f"--seed must be a whole number in [0, 2**32), got {seed!r}")
    data = Path(data)
    fc = FeatureConfig.load(data)
    rows = read_manifest(data)
    check_no_leak(rows)
    train_rows = [r for r in select(rows, "mfcc", ("train",)) if r["augmentation"] != "synthetic"]
    if not train_rows:
        raise UserError(f"{data} has no MFCC rows in the train split (rerun augment with --features mfcc)")
    labels = sorted({r["genre"] for r in rows})
    x = check_finite_features(load_arrays(data, train_rows, "mfcc"), train_rows, data)
    y = label_ids(train_rows, labels)
    mean, std = x.mean(axis=(0, 1)), x.std(axis=(0, 1)) + 1e-6
    xs = ((x - mean) / std).astype("float32")
    frames, n_mfcc = fc.feature_shape("mfcc")
    keras.utils.set_random_seed(seed)
    gen = build_generator(frames, n_mfcc, len(labels), latent_dim=latent_dim)
    disc = build_discriminator(frames, n_mfcc, len(labels))
    gan = ConditionalGAN(gen, disc, latent_dim=latent_dim, seed=seed)
    gan.compile()
    with run_folder(out, "gan", "train") as (run, final):  # complete-or-absent
        gan.fit(xs, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=verbose,
                callbacks=[keras.callbacks.CSVLogger(str(run / "history.csv")), stop_on_non_finite_loss()])
        check_finite_model(gen)
        check_finite_model(disc)
        save_model(gen, run / "generator.keras")
        save_model(disc, run / "discriminator.keras")
        fc.save(run)
        config = {"task": GAN_TASK, "labels": labels, "latent_dim": latent_dim, "epochs": epochs,
                  "batch_size": batch_size, "seed": seed, "optimizer": "adam lr 2e-4 beta1 0.5 beta2 0.999",
                  "feature_kind": "mfcc", "feature_config": fc.to_dict(), "feature_fingerprint": fc.fingerprint(),
                  "standardise_mean": mean.tolist(), "standardise_std": std.tolist(),
                  "data": {"folder": str(data.resolve()), "train_tracks": sorted({r["track_id"] for r in train_rows})}}
        write_json_atomic(run / "config.json", config, only_if_changed=False)
        write_json_atomic(run / "labels.json", labels, only_if_changed=False)
        fake = _generate(run, config, {g: max(8, int(np.sum(y == i))) for i, g in enumerate(labels)}, seed + 1)
        quality = quality_report(_real_by_genre(x, y, labels), fake, seed)
        write_json_atomic(run / "quality.json", quality, only_if_changed=False)
        write_text_atomic(run / "quality.md", "# Real vs synthetic MFCC statistics (training split)\n\n"
                          + format_quality(quality), only_if_changed=False)
        plot_real_vs_generated(_real_by_genre(x, y, labels), fake, run / "real_vs_generated.png")
        if (run / "history.csv").is_file() and read_csv(run / "history.csv"):
            plot_gan_losses(read_csv(run / "history.csv"), run / "losses.png")
    return {"run": str(final), "quality": quality}


def _load_gan(run) -> tuple[dict, object]:
    run = Path(run)
    p = run / "config.json"
    if not p.is_file() or not (run / "generator.keras").is_file():
        raise UserError(f"{run} is not a GAN run folder (config.json and generator.keras needed)")
    try:
        config = loads_json(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable GAN run folder {run}: {exc}") from None
    if not isinstance(config, dict) or config.get("task") != GAN_TASK:
        raise UserError(f"{run} is a classifier run, not a GAN run")
    labels, dim = config.get("labels"), config.get("latent_dim")
    n_mfcc = len(config.get("standardise_mean") or [])
    if (not isinstance(labels, list) or not labels or not all(isinstance(g, str) and g for g in labels)
            or not isinstance(dim, int) or isinstance(dim, bool) or dim < 1 or n_mfcc < 1
            or len(config.get("standardise_std") or []) != n_mfcc
            or not all(isinstance(v, (int, float)) for v in config["standardise_mean"] + config["standardise_std"])
            or not isinstance(config.get("feature_config"), dict)):
        raise UserError(f"{p} is not a valid GAN config (labels, latent_dim, standardisation, feature_config)")
    return config, load_model(run / "generator.keras")


def _generate(run, config, per_genre: dict[str, int], seed: int, generator=None) -> dict[str, np.ndarray]:
    if generator is None:
        config, generator = _load_gan(run)
    rng = np.random.default_rng(seed)
    mean, std = np.array(config["standardise_mean"]), np.array(config["standardise_std"])
    out = {}
    for i, g in enumerate(config["labels"]):
        n = per_genre.get(g, 0)
        if n <= 0:
            continue
        z = rng.standard_normal((n, config["latent_dim"])).astype("float32")
        ys = np.full((n,), i, dtype="int32")
        xs = np.asarray(generator.predict([z, ys], verbose=0, batch_size=256))
        out[g] = (xs * std + mean).astype("float32")
    return out


def gan_generate(run, per_genre: int, out, seed: int = 0) -> dict:
    """Write ``per_genre`` synthetic MFCC sequences per genre from a GAN run into the feature
    folder ``out`` (manifest rows ``split=train, augmentation=synthetic``)."""
    config, generator = _load_gan(run)
    if per_genre < 1:
        raise UserError("--per-genre must be at least 1")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2 ** 32:
        raise UserError(f"--seed must be a whole number in [0, 2**32), got {seed!r}")
    out = Path(out)
    if (out / "manifest.csv").exists():
        raise UserError(f"{out} already holds generated data; choose another --out")
    check_new_run_path(out)
    fake = _generate(run, config, {g: per_genre for g in config["labels"]}, seed, generator)
    rows = []
    name = Path(run).resolve().name
    with atomic_output(out, folder=True) as work:  # complete-or-absent
        for g, seqs in fake.items():
            for k, s in enumerate(seqs):
                rel = f"mfcc/{g}/synthetic-{name}-{k:05d}.npy"
                save_npy_atomic(work / rel, s)
                rows.append({"path": rel, "feature": "mfcc", "track_id": f"{g}/synthetic-{name}-{k:05d}", "genre": g,
                             "split": "train", "augmentation": "synthetic", "segment": 0, "start_s": "0.000",
                             "padded_s": "0.000", "source": f"gan:{Path(run).resolve()}"})
        FeatureConfig.from_dict(config["feature_config"]).save(work)
        write_manifest(work / "manifest.csv", rows)
    return {"out": str(out), "rows": len(rows)}


def synthetic_rows(folder, fc: FeatureConfig) -> list[dict]:
    """Rows of a ``gan generate`` folder, for the training split only, with absolute paths."""
    folder = Path(folder)
    sfc = FeatureConfig.load(folder)
    if sfc.fingerprint() != fc.fingerprint():
        raise UserError(f"--synthetic {folder} was made with another feature config than the training data")
    rows = read_manifest(folder)
    bad = [r for r in rows if r["augmentation"] != "synthetic" or r["split"] != "train"]
    if bad or not rows:
        raise UserError(f"--synthetic {folder} is not a `genrekit gan generate` folder (rows must be synthetic, train)")
    return [{**r, "path": str((folder / r["path"]).resolve())} for r in rows]
