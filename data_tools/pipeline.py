"""The offline augmentation stage behind ``genrekit augment``.

catalogue -> splits.csv (first) -> per-track job: decode, validate, augment (train only),
render features, write files atomically -> manifest.csv + report.md.

Resume: each finished track leaves ``.state/<track_id>.json`` (written last, atomically);
a rerun skips those tracks and rebuilds the manifest. Determinism: every random choice
draws from a generator seeded by (seed, track, variant), so the same seed gives
byte-identical files whatever the number of workers or shards.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from data_tools.audio import load_audio, peak_dbfs
from data_tools.augment import (
    AugmentConfig,
    Variant,
    apply_waveform,
    spec_transform_for,
    variant_rng,
)
from data_tools.catalogue import Track, find_tracks, resolve_root
from data_tools.errors import AudioDecodeError, DataError
from data_tools.features import FEATURE_KINDS, FeatureConfig, extract
from data_tools.fsio import (
    check_writable,
    remove_stale_temporaries,
    save_npy_atomic,
    save_png_atomic,
    write_json_atomic,
    write_text_atomic,
)
from data_tools.manifest import MANIFEST_NAME, read_manifest, write_manifest
from data_tools.splits import (
    SplitResult,
    parse_ratios,
    read_splits_csv,
    split_from_source,
    stratified_split,
    write_splits_csv,
)

STATE_DIR = ".state"
SETTINGS_NAME = "augment_config.json"
PAD_REPORT_TOLERANCE_S = 0.25  # GTZAN clips are 29.98-30.37 s: don't report 0.02 s of padding


@dataclass(frozen=True)
class AugmentSettings:
    """Everything that decides the output files (workers and shard do not)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    kinds: tuple[str, ...] = FEATURE_KINDS
    seed: int = 0
    split: str = "70/20/10"  # ratios, "gtzan-filtered" or a split file/folder
    genres: tuple[str, ...] | None = None
    min_seconds: float = 1.0  # shorter clips are skipped as too short
    silence_dbfs: float = -60.0  # clips whose peak is below this are skipped as silent

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in FEATURE_KINDS]
        if bad or not self.kinds:
            raise DataError(f"unknown feature kind(s) {', '.join(bad) or '(none)'} "
                            f"(known: {', '.join(FEATURE_KINDS)})")

    def to_dict(self) -> dict:
        return {"feature_config": self.features.to_dict(),
                "feature_fingerprint": self.features.fingerprint(),
                "augment": self.augment.to_dict(), "kinds": list(self.kinds), "seed": self.seed,
                "split": self.split, "genres": list(self.genres) if self.genres else None,
                "min_seconds": self.min_seconds, "silence_dbfs": self.silence_dbfs}


@dataclass
class TrackResult:
    track_id: str
    genre: str
    split: str
    status: str  # ok | bad | silent | short
    message: str = ""
    duration_s: float = 0.0
    native_sr: int = 0
    rows: list[dict] = field(default_factory=list)
    skipped: bool = False  # finished in an earlier run

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d.pop("skipped")
        return d


# -- per-track work (runs in worker processes) ---------------------------------------------

def _state_path(out: Path, track_id: str) -> Path:
    return out / STATE_DIR / f"{track_id}.json"


def _feature_relpath(kind: str, track_id: str, variant: str, seg: int) -> str:
    ext = "png" if kind == "mel" else "npy"
    return f"{kind}/{track_id}.{variant}.{seg:03d}.{ext}"


def _load_finished(out: Path, track_id: str) -> TrackResult | None:
    p = _state_path(out, track_id)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        res = TrackResult(**d)
    except (OSError, ValueError, TypeError):
        return None
    if res.status != "ok" or not all((out / r["path"]).is_file() for r in res.rows):
        return None
    res.skipped = True
    return res


def process_track(args) -> TrackResult:
    """Decode, validate, augment and render one track; write its files and state."""
    track, split, root, out, settings = args
    res = TrackResult(track_id=track.track_id, genre=track.genre, split=split, status="ok")
    done = _load_finished(out, track.track_id)
    if done is not None:
        return done
    fc, ac = settings.features, settings.augment
    try:
        audio = load_audio(track.path, sr=fc.sr)
    except AudioDecodeError as exc:
        res.status, res.message = "bad", str(exc)
        return res
    res.duration_s, res.native_sr = round(audio.duration_s, 3), audio.native_sr
    if audio.duration_s < settings.min_seconds:
        res.status = "short"
        res.message = f"{audio.duration_s:.2f} s < {settings.min_seconds:g} s"
        return res
    if peak_dbfs(audio.y) < settings.silence_dbfs:
        res.status, res.message = "silent", f"peak below {settings.silence_dbfs:g} dBFS"
        return res
    variants = ac.variants() if split == "train" else [Variant("original", "original")]
    source = track.path.relative_to(root).as_posix()
    for variant in variants:
        rng = variant_rng(settings.seed, track.track_id, variant.name)
        y = apply_waveform(audio.y, fc.sr, variant)
        spec = spec_transform_for(variant, ac)
        for kind in settings.kinds:
            for seg, feat in extract(y, fc, kind, spec_transform=spec, rng=rng):
                rel = _feature_relpath(kind, track.track_id, variant.name, seg.index)
                if kind == "mel":
                    save_png_atomic(out / rel, feat)  # mfcc and musicnn windows are .npy
                else:
                    save_npy_atomic(out / rel, feat)
                res.rows.append({"path": rel, "feature": kind, "track_id": track.track_id,
                                 "genre": track.genre, "split": split,
                                 "augmentation": variant.name, "segment": seg.index,
                                 "start_s": f"{seg.start_s:.3f}", "padded_s": f"{seg.padded_s:.3f}",
                                 "source": source})
    write_json_atomic(_state_path(out, track.track_id), res.to_json(), only_if_changed=False)
    return res


def _init_worker():
    # one BLAS/OpenMP thread per process: N processes on N cores, no oversubscription
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover
        pass


# -- the stage -----------------------------------------------------------------------------

def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DataError(f"bad --shard {text!r}: expected K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise DataError(f"bad --shard {text!r}: need 1 <= K <= N")
    return k, n


def _decide_split(tracks: list[Track], all_genres: list[str], settings: AugmentSettings) -> SplitResult:
    src = settings.split
    if src == "all-test":  # an evaluation-only set (eval-spotify): every track is test
        return SplitResult(assignment={t.track_id: "test" for t in tracks}, source="all tracks in test")
    looks_like_ratios = all(c.isdigit() or c in "./,: " for c in src) and any(c.isdigit() for c in src)
    if looks_like_ratios and not Path(src).exists():
        return stratified_split(tracks, parse_ratios(src), settings.seed)
    return split_from_source(tracks, src, all_genres)


def _check_settings(out: Path, settings: AugmentSettings) -> None:
    p = out / SETTINGS_NAME
    if not p.is_file():
        return
    try:
        old = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{p} is unreadable; choose a new --out") from None
    new = settings.to_dict()
    old.pop("data_root", None)
    diff = sorted(k for k in new if old.get(k) != new[k])
    if diff:
        raise DataError(f"{out} already holds features made with other settings "
                        f"(differs in: {', '.join(diff)}); choose a new --out")


def run_augment(data, out, settings: AugmentSettings | None = None, workers: int = 1,
                shard: str | None = None, progress: bool = True, log=None) -> dict:
    """Run the augmentation stage. Returns a summary dict (counts, paths)."""
    settings = settings or AugmentSettings()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if workers < 1:
        raise DataError("--workers must be at least 1")
    shard_kn = parse_shard(shard)
    root = resolve_root(data)
    all_genres = sorted({t.genre for t in find_tracks(root)})
    tracks = find_tracks(root, list(settings.genres) if settings.genres else None)
    out = Path(out).expanduser()
    check_writable(out)
    _check_settings(out, settings)
    remove_stale_temporaries(out)

    # 1. the split, before anything else
    split = _decide_split(tracks, all_genres, settings)
    splits_path = out / "splits.csv"
    if splits_path.is_file():
        old = read_splits_csv(splits_path)
        if old != split.assignment:
            raise DataError(f"{splits_path} differs from the split these settings give now "
                            "(did the data change?); choose a new --out")
    else:
        write_splits_csv(splits_path, tracks, split)
    settings_doc = settings.to_dict() | {"data_root": str(root)}
    write_json_atomic(out / SETTINGS_NAME, settings_doc)
    settings.features.save(out)

    # 2. per-track jobs
    todo = [t for t in tracks if t.track_id in split.assignment]
    if shard_kn:
        k, n = shard_kn
        todo = [t for i, t in enumerate(todo) if i % n == k - 1]
    jobs = [(t, split.assignment[t.track_id], root, out, settings) for t in todo]
    results: list[TrackResult] = []
    bar = _progress(len(jobs), progress)
    try:
        if workers == 1 or len(jobs) <= 1:
            for j in jobs:
                results.append(process_track(j))
                bar.update(1)
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            with ctx.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
                for r in pool.imap_unordered(process_track, jobs, chunksize=1):
                    results.append(r)
                    bar.update(1)
    finally:
        bar.close()

    # 3. manifest and report
    results.sort(key=lambda r: r.track_id)
    rows = [row for r in results for row in r.rows]
    suffix = f".shard-{shard_kn[0]}-of-{shard_kn[1]}" if shard_kn else ""
    manifest_path = out / (f"manifest{suffix}.csv" if suffix else MANIFEST_NAME)
    write_manifest(manifest_path, rows)
    report = build_report(root, settings, split, results, rows, shard_kn)
    write_text_atomic(out / f"report{suffix}.md", report)
    for r in results:
        if r.status != "ok":
            log(f"skipped {r.track_id}: {r.status}: {r.message}")
    summary = {
        "out": str(out), "manifest": str(manifest_path), "tracks": len(results),
        "ok": sum(r.status == "ok" for r in results),
        "skipped_bad": sum(r.status != "ok" for r in results),
        "resumed": sum(r.skipped for r in results), "files": len(rows),
        "missing_on_disk": len(split.missing_on_disk), "unassigned": len(split.unassigned),
    }
    return summary


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="track", desc="augment", disable=not enabled or None,
                file=sys.stderr, dynamic_ncols=True)


def build_report(root: Path, settings: AugmentSettings, split: SplitResult,
                 results: list[TrackResult], rows: list[dict], shard_kn=None) -> str:
    L = ["# genrekit augment report", ""]
    L.append(f"- data: `{root}`")
    L.append(f"- split: {split.source}")
    L.append(f"- seed: {settings.seed}")
    if shard_kn:
        L.append(f"- shard {shard_kn[0]} of {shard_kn[1]}")
    fc = settings.features
    L.append(f"- features: {', '.join(settings.kinds)}; {fc.sr} Hz, n_fft {fc.n_fft}, hop {fc.hop_length}, "
             f"{fc.n_mels} mels, floor -{fc.top_db:g} dB, image {fc.image_height}x{fc.image_width} "
             f"per {fc.image_seconds:g} s, MFCC {fc.n_mfcc} x {fc.mfcc_seconds:g} s "
             f"(config fingerprint {fc.fingerprint()})")
    L.append(f"- train-split variants: {', '.join(v.name for v in settings.augment.variants())}")
    L += ["", "## Catalogue", "",
          "| genre | tracks | ok | bad | silent | too short | duration min-max (s) | train | valid | test |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_genre = defaultdict(list)
    for r in results:
        by_genre[r.genre].append(r)
    for g in sorted(by_genre):
        rs = by_genre[g]
        st = Counter(r.status for r in rs)
        durs = [r.duration_s for r in rs if r.duration_s > 0]
        rng = f"{min(durs):.2f}-{max(durs):.2f}" if durs else "-"
        sp = Counter(r.split for r in rs if r.status == "ok")
        L.append(f"| {g} | {len(rs)} | {st['ok']} | {st['bad']} | {st['silent']} | {st['short']} | {rng} "
                 f"| {sp['train']} | {sp['valid']} | {sp['test']} |")
    problems = [r for r in results if r.status != "ok"]
    if problems:
        L += ["", "## Skipped files", ""]
        L += [f"- `{r.track_id}`: {r.status}: {r.message}" for r in problems]
    padded = sorted({(r["track_id"], r["feature"], float(r["padded_s"])) for r in rows
                     if float(r["padded_s"]) > PAD_REPORT_TOLERANCE_S and r["augmentation"] == "original"})
    if padded:
        L += ["", f"## Padded clips (shorter than a segment; filled by {fc.pad_mode})", ""]
        L += [f"- `{t}` ({k}): {p:.2f} s of fill" for t, k, p in padded]
    if split.missing_on_disk:
        L += ["", f"## Named in the split but not on disk ({len(split.missing_on_disk)})", ""]
        L += [", ".join(f"`{t}`" for t in split.missing_on_disk[:50])
              + (" …" if len(split.missing_on_disk) > 50 else "")]
    if split.unassigned:
        L += ["", f"## On disk but not in the split, left out ({len(split.unassigned)})", ""]
        L += [", ".join(f"`{t}`" for t in split.unassigned[:50])
              + (" …" if len(split.unassigned) > 50 else "")]
    L += ["", "## Feature files", "", "| feature | split | augmentation | files |", "| --- | --- | --- | --- |"]
    cnt = Counter((r["feature"], r["split"], r["augmentation"]) for r in rows)
    for (k, s, a), n in sorted(cnt.items()):
        L.append(f"| {k} | {s} | {a} | {n} |")
    L.append(f"\nTotal: {len(rows)} feature files from {sum(r.status == 'ok' for r in results)} tracks.")
    return "\n".join(L) + "\n"


def merge_shards(out) -> dict:
    """Merge ``manifest.shard-K-of-N.csv`` files in ``out`` into ``manifest.csv``."""
    out = Path(out)
    shards = sorted(out.glob("manifest.shard-*-of-*.csv"))
    if not shards:
        raise DataError(f"no shard manifests (manifest.shard-K-of-N.csv) in {out}")
    totals = {p.name.rsplit("-of-", 1)[1].split(".")[0] for p in shards}
    if len(totals) != 1:
        raise DataError(f"shard manifests in {out} come from different N: {', '.join(sorted(totals))}")
    n = int(totals.pop())
    have = {int(p.name.split("shard-")[1].split("-of-")[0]) for p in shards}
    missing = sorted(set(range(1, n + 1)) - have)
    if missing:
        raise DataError(f"missing shard(s) {', '.join(map(str, missing))} of {n} in {out}")
    rows = []
    for p in shards:
        rows += read_manifest(p)
    lost = [r["path"] for r in rows if not (out / r["path"]).is_file()]
    if lost:
        raise DataError(f"{len(lost)} feature file(s) named in the shard manifests are missing, "
                        f"e.g. {lost[0]}; copy every shard's output into {out}")
    write_manifest(out / MANIFEST_NAME, rows)
    return {"manifest": str(out / MANIFEST_NAME), "shards": n, "files": len(rows)}

