"""The offline augmentation stage behind ``genrekit augment``.

catalogue -> splits.csv (first) -> per-track job: decode, validate, augment (train only),
render features, write files atomically -> manifest.csv + report.md.

Resume: each finished track leaves ``.state/<track_id>.json`` (written last, atomically),
recording the audio file's size and modification time; a rerun skips those tracks unless
their audio changed, and rebuilds the manifest. Determinism: every random choice draws from
a generator seeded by (seed, track, variant), and BLAS runs on one thread in every process,
so the same seed gives byte-identical files whatever the number of workers or shards.

Bounded cost: settings whose segments would need gigabytes are refused up front; a file
whose header says it is longer than ``max_seconds`` is skipped before it is decoded; any
failure inside one track (undecodable, unusable features, out of memory) skips that track
and is reported, and a worker process killed by the system stops the run with one line.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from genrekit.data_tools import beam_runner
from genrekit.data_tools.audio import load_audio, peak_dbfs
from genrekit.data_tools.augment import (
    ORIGINAL,
    SPECTRAL_MAX_BYTES,
    AugmentConfig,
    Variant,
    apply_waveform,
    family_of,
    magnitude_stft,
    magnitude_stft_bytes,
    spec_transform_for,
    spectral_variant,
    variant_rng,
)
from genrekit.data_tools.catalogue import Catalogue, Track, scan_tracks
from genrekit.data_tools.errors import AudioDecodeError, AudioTooLongError, DataError
from genrekit.data_tools.features import (
    CONFIG_NAME,
    FeatureConfig,
    check_features,
    default_kinds,
    extract,
    get_kind,
    kind_names,
    settings_words,
)
from genrekit.data_tools.fsio import (
    check_no_links,
    check_writable,
    loads_json,
    own_folder_marker,
    remove_stale_temporaries,
    write_json_atomic,
    write_text_atomic,
)
from genrekit.data_tools.manifest import MANIFEST_NAME, read_manifest, write_manifest
from genrekit.data_tools.splits import (
    SplitResult,
    check_ratios,
    normalise_ratios,
    ratio_numbers,
    read_splits_csv,
    split_from_source,
    stratified_split,
    write_splits_csv,
)

STATE_DIR = ".state"
SETTINGS_NAME = "augment_config.json"
PAD_REPORT_TOLERANCE_S = 0.25  # GTZAN clips are 29.98-30.37 s: don't report 0.02 s of padding
DEFAULT_MAX_SECONDS = 900.0  # 15 minutes: longer files are skipped (and reported) before decoding
MAX_CLIP_BYTES = 4 << 30  # working memory of one whole clip's spectrogram (musicnn/melspec/tempogram)


@dataclass(frozen=True)
class AugmentSettings:
    """Everything that decides the output files (workers and shard do not)."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    kinds: tuple[str, ...] = field(default_factory=default_kinds)  # feature kinds (registry names)
    seed: int = 0
    ratios: tuple[float, float, float] = (70.0, 20.0, 10.0)  # train/valid/test, stratified by genre ...
    split: str | None = None  # ... unless a named split: "gtzan-filtered", a split file/folder, "all-test"
    genres: tuple[str, ...] | None = None
    min_seconds: float = 1.0  # shorter clips are skipped as too short
    silence_dbfs: float = -60.0  # clips whose peak is below this are skipped as silent
    max_seconds: float = DEFAULT_MAX_SECONDS  # longer files are skipped before decoding

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in kind_names()]
        if bad or not self.kinds:
            raise DataError(f"unknown feature kind(s) {', '.join(map(str, bad)) or '(none)'} "
                            f"(known: {', '.join(kind_names())})")
        object.__setattr__(self, "ratios", check_ratios(self.ratios))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2 ** 32:
            raise DataError(f"--seed must be a whole number in [0, 2**32), got {self.seed!r}")
        if self.split is not None and (not isinstance(self.split, str) or not self.split.strip()):
            raise DataError(f"bad --split {self.split!r}: expected gtzan-filtered, a split CSV or a folder of lists")
        if not 0 < self.max_seconds <= 24 * 3600:  # NaN too
            raise DataError(f"--max-seconds must be between 0 and 86400, got {self.max_seconds:g}")
        if not 0 <= self.min_seconds < self.max_seconds:
            raise DataError(f"--min-seconds must be between 0 and --max-seconds ({self.max_seconds:g}), "
                            f"got {self.min_seconds:g}")
        # a time stretch below 1 lengthens the clip the features are computed on
        slowest = min([1.0, *self.augment.stretch_rates]) if "stretch" in self.augment.augmentations else 1.0
        for kind in self.kinds:
            need = self.features.clip_bytes(kind, self.max_seconds / slowest)
            if need > MAX_CLIP_BYTES:
                raise DataError(f"with --max-seconds {self.max_seconds:g}, one clip's {kind} features would "
                                f"need {need / 2**30:.1f} GiB of memory (limit {MAX_CLIP_BYTES / 2**30:g} GiB): "
                                "lower --max-seconds or raise --hop-length")

    def to_dict(self) -> dict:
        """The settings as JSON (``augment_config.json``: a rerun resumes only with the same)."""
        return {"feature_config": self.features.to_dict(),
                "feature_fingerprint": self.features.fingerprint(),
                "augment": self.augment.to_dict(), "kinds": list(self.kinds), "seed": self.seed,
                "split": self.split, "ratios": None if self.split else list(self.ratios),
                "genres": list(self.genres) if self.genres else None,
                "min_seconds": self.min_seconds, "silence_dbfs": self.silence_dbfs,
                "max_seconds": self.max_seconds}


@dataclass
class TrackResult:
    """What augment did with one track: its split, status and message, the audio's duration,
    rate, size and mtime, and its manifest rows."""
    track_id: str
    genre: str
    split: str
    status: str  # ok | bad | silent | short | long
    message: str = ""
    duration_s: float = 0.0
    native_sr: int = 0
    rows: list[dict] = field(default_factory=list)
    source_size: int = -1  # the audio file's size and mtime when its features were made:
    source_mtime_ns: int = -1  # a rerun redoes a track whose audio was replaced
    skipped: bool = False  # finished in an earlier run

    def to_json(self) -> dict:
        """The result as JSON (a track's state file), ``skipped`` left out."""
        d = dict(self.__dict__)
        d.pop("skipped")
        return d


# -- per-track work (runs in worker processes) ---------------------------------------------

def _state_path(out: Path, track_id: str) -> Path:
    return out / STATE_DIR / f"{track_id}.json"


def _feature_relpath(kind: str, track_id: str, variant: str, seg: int) -> str:
    return get_kind(kind).relpath(track_id, variant, seg)


def _source_stat(path: Path) -> tuple[int, int]:
    st = path.stat()  # follows links: the audio's own size and mtime
    return st.st_size, st.st_mtime_ns


def _read_state(out: Path, track_id: str) -> TrackResult | None:
    p = _state_path(out, track_id)
    if not p.is_file():
        return None
    try:
        return TrackResult(**loads_json(p.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def _is_finished(res: TrackResult | None, out: Path, stat: tuple[int, int] | None) -> bool:
    return (res is not None and res.status == "ok" and stat is not None
            and (res.source_size, res.source_mtime_ns) == stat
            and all((out / r["path"]).is_file() for r in res.rows))


def _remove_old_outputs(out: Path, old: TrackResult, keep: set[str]) -> None:
    """Delete the feature files an earlier run made for a track that were not made again now
    (its audio changed and gives fewer segments, or now fails). Only paths of genrekit's own
    naming scheme in its own feature folders are touched."""
    for r in old.rows:
        rel = str(r.get("path", ""))
        kind, _, rest = rel.partition("/")
        name = rest[len(old.track_id) + 1:]  # "<variant>.<segment>.<ext>"
        ours = (kind in kind_names() and rest.startswith(old.track_id + ".") and "/" not in name
                and ".." not in rel.split("/"))
        if rel in keep or not ours:
            continue
        try:
            (out / rel).unlink()
        except OSError:
            pass


def _render(track: Track, split: str, root: Path, settings: AugmentSettings, res: TrackResult) -> list[tuple[str, object]]:
    """Decode, validate and render one track in memory: [(relative path, feature)]; fills ``res``."""
    fc, ac = settings.features, settings.augment
    audio = load_audio(track.path, sr=fc.sr, max_seconds=settings.max_seconds)
    res.duration_s, res.native_sr = round(audio.duration_s, 3), audio.native_sr
    if audio.duration_s < settings.min_seconds:
        res.status = "short"
        res.message = f"{audio.duration_s:.2f} s < {settings.min_seconds:g} s"
        return []
    if peak_dbfs(audio.y) < settings.silence_dbfs:
        res.status, res.message = "silent", f"peak below {settings.silence_dbfs:g} dBFS"
        return []
    variants = ac.variants() if split == "train" else [ORIGINAL]
    source = track.path.relative_to(root).as_posix()  # as seen under the data folder
    files = []
    clip = _ClipVariants(audio.y, fc, ac, keep_spectra=any(family_of(v).mask for v in variants))
    for variant in variants:
        rng = variant_rng(settings.seed, track.track_id, variant.name)
        for kind in settings.kinds:
            segs = clip.features(variant, kind, rng)
            check_features(kind, [f for _, f in segs])
            for seg, feat in segs:
                rel = _feature_relpath(kind, track.track_id, variant.name, seg.index)
                files.append((rel, feat))
                res.rows.append({"path": rel, "feature": kind, "track_id": track.track_id,
                                 "genre": track.genre, "split": split,
                                 "augmentation": variant.name, "segment": seg.index,
                                 "start_s": f"{seg.start_s:.3f}", "padded_s": f"{seg.padded_s:.3f}",
                                 "source": source})
    return files


class _ClipVariants:
    """The features of one clip's variants, sharing what the original already computed:

    - the original: :func:`extract` on the decoded waveform, as predict computes it;
    - a SpecAugment mask of a kind made from the mel power spectrogram (a
      :attr:`FeatureKind.spectral`): the mask on the original's spectrograms, kept when the
      original was rendered (the same values, hence the same bytes, as rendering it again);
    - a time stretch or pitch shift of such a kind: read from the original's magnitude STFT,
      computed once (:func:`spectral_variant`);
    - anything else (tempogram, a kind without a spectral path, a clip too long for its STFT to be
      held, ``variant_source="waveform"``): the variant's waveform (audiomentations, made once
      per variant) through :func:`extract`.
    The order of the random draws is the same as rendering every variant from its waveform."""

    def __init__(self, y, fc: FeatureConfig, ac: AugmentConfig, keep_spectra: bool):
        self.y, self.fc, self.ac, self.keep_spectra = y, fc, ac, keep_spectra
        self.spectra: dict[str, tuple[list, list]] = {}  # kind -> (segments, spectrograms)
        self._mag = None
        self._wave = (None, None)  # (variant name, waveform)
        self.spectral = (ac.variant_source == "stft"
                         and magnitude_stft_bytes(len(y), fc.n_fft, fc.hop_length) <= SPECTRAL_MAX_BYTES)

    def features(self, variant: Variant, kind: str, rng):
        """``[(segment, feature)]`` of one variant of the clip in one kind."""
        fam, path = family_of(variant), get_kind(kind).spectral
        if variant.family == ORIGINAL.family:
            if self.keep_spectra and path is not None:
                return self._original_kept(kind, rng)
            return extract(self.y, self.fc, kind, rng=rng)
        if fam.mask is not None and kind in self.spectra:
            mask = spec_transform_for(variant, self.ac)
            segs, kept = self.spectra[kind]
            return [(seg, path.to_feature(mask(spec, rng), self.fc))
                    for seg, spec in zip(segs, kept, strict=False)]
        if fam.factors is not None and path is not None and self.spectral:
            if self._mag is None:
                self._mag = magnitude_stft(self.y, self.fc.n_fft, self.fc.hop_length)
            return spectral_variant(self._mag, len(self.y), self.fc, kind, variant)
        if self._wave[0] != variant.name:
            self._wave = (variant.name, apply_waveform(self.y, self.fc.sr, variant))
        return extract(self._wave[1], self.fc, kind, spec_transform=spec_transform_for(variant, self.ac), rng=rng)

    def _original_kept(self, kind: str, rng):
        """The original, keeping each segment's spectrogram for the masks."""
        kept = []

        def keep(spec, _rng):  # sees each segment's spectrogram, changes nothing
            kept.append(spec.copy())
            return spec

        segs = extract(self.y, self.fc, kind, spec_transform=keep, rng=rng)
        empty = np.zeros(0, dtype=np.float32)
        self.spectra[kind] = ([replace(seg, audio=empty) for seg, _ in segs], kept)
        return segs


def process_track(args) -> TrackResult:
    """Decode, validate, augment and render one track; write its files and state.

    Every failure inside the track (undecodable, too long, unusable features, out of memory,
    a library error) makes it a reported skip; only failing to write the output aborts."""
    track, split, root, out, settings = args
    res = TrackResult(track_id=track.track_id, genre=track.genre, split=split, status="ok")
    old = _read_state(out, track.track_id)
    try:
        res.source_size, res.source_mtime_ns = stat = _source_stat(track.path)
    except OSError as exc:
        res.status, res.message = "bad", f"cannot read file: {exc.strerror or exc}"
        return res
    if _is_finished(old, out, stat):
        old.skipped = True
        return old
    try:
        files = _render(track, split, root, settings, res)
    except AudioTooLongError as exc:
        res.status, res.message, files = "long", str(exc), []
    except AudioDecodeError as exc:
        res.status, res.message, files = "bad", str(exc), []
    except MemoryError:
        res.status, res.message, files = "bad", "out of memory while processing this file", []
    except Exception as exc:  # noqa: BLE001 - one file's failure must not abort the others
        msg = str(exc).splitlines()[0] if str(exc) else ""
        res.status, res.message, files = "bad", f"failed: {type(exc).__name__}: {msg}"[:300], []
    if res.status != "ok":
        res.rows = []
        if old is not None:  # features of an earlier version of this file are no longer valid
            _remove_old_outputs(out, old, set())
            try:
                _state_path(out, track.track_id).unlink()
            except OSError:
                pass
        return res
    try:
        for rel, feat in files:
            get_kind(rel.partition("/")[0]).store(out / rel, feat)  # PNG or .npy, as the kind says
        if old is not None:
            _remove_old_outputs(out, old, {rel for rel, _ in files})
        write_json_atomic(_state_path(out, track.track_id), res.to_json(), only_if_changed=False)
    except OSError as exc:
        raise DataError(f"cannot write features of {track.track_id} in {out}: {exc.strerror or exc}") from None
    return res


def _preload() -> None:
    """Import what rendering a track needs (librosa's spectrum code alone takes seconds)."""
    import librosa
    import PIL.PngImagePlugin  # noqa: F401
    import scipy.fft  # noqa: F401
    import soundfile  # noqa: F401

    for name in ("stft", "power_to_db", "filters", "feature", "util"):
        getattr(librosa, name)  # librosa loads its submodules on first use
    librosa.feature.melspectrogram  # noqa: B018


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies (a kill -9 of augment leaves no worker
    behind), and exit now if the parent is already gone; elsewhere nothing is done."""
    if sys.platform.startswith("linux"):
        try:
            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def _init_worker(parent: int | None = None):
    if parent is not None:
        _die_with_parent(parent)
    # one BLAS/OpenMP thread per process: N processes on N cores, no oversubscription
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover
        pass


# -- the stage -----------------------------------------------------------------------------

def check_shard(shard) -> tuple[int, int] | None:
    """``shard`` as (K, N) with 1 <= K <= N (None: the whole run)."""
    if shard is None:
        return None
    try:
        k, n = (int(x) for x in shard)
        ok = (k, n) == tuple(shard) and 1 <= k <= n
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise DataError(f"bad --shard {'/'.join(map(str, shard)) if isinstance(shard, (tuple, list)) else shard!r}: "
                        "need K/N with 1 <= K <= N")
    return k, n


def _decide_split(tracks: list[Track], all_genres: list[str], settings: AugmentSettings) -> SplitResult:
    src = settings.split
    if src is None:
        return stratified_split(tracks, normalise_ratios(settings.ratios), settings.seed)
    if src == "all-test":  # an evaluation-only set (eval-spotify): every track is test
        return SplitResult(assignment={t.track_id: "test" for t in tracks}, source="all tracks in test")
    return split_from_source(tracks, src, all_genres)


def _legacy_split(old: dict) -> dict:
    """An augment_config.json written before --split and --ratios were kept apart held both in
    "split", told apart by its look: read it the way it was read then."""
    if "ratios" in old or not isinstance(old.get("split"), str):
        return old
    src = old["split"]
    looks_like_ratios = all(c.isdigit() or c in "./,: +-eE" for c in src) and any(c.isdigit() for c in src)
    if looks_like_ratios and not Path(src).exists():
        try:
            return old | {"split": None, "ratios": list(check_ratios(ratio_numbers(src)))}
        except DataError:
            pass
    return old | {"ratios": None}


def _check_settings(out: Path, settings: AugmentSettings) -> None:
    p = out / SETTINGS_NAME
    if not p.is_file():
        return
    try:
        old = loads_json(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{p} is unreadable; choose a new --out") from None
    new = settings.to_dict()
    old.pop("data_root", None)
    old.setdefault("max_seconds", DEFAULT_MAX_SECONDS)  # folders made before the limit existed
    old = _legacy_split(old)
    diff = sorted(k for k in new if old.get(k) != new[k])
    if diff:
        raise DataError(f"{out} already holds features made with other settings "
                        f"(differs in: {', '.join(diff)}); choose a new --out")


def catalogue_for(data, genres=None) -> tuple[Catalogue, list[str]]:
    """The catalogue of ``data`` (restricted to ``genres``) and every genre the tree has."""
    cat = scan_tracks(data)
    all_genres = sorted({t.genre for t in cat.tracks})
    if genres:
        unknown = [g for g in genres if g not in all_genres]
        if unknown:
            raise DataError(f"unknown genre(s) {', '.join(unknown)}; the data has: {', '.join(all_genres)}")
        cat = Catalogue(root=cat.root, tracks=[t for t in cat.tracks if t.genre in genres],
                        skipped=[s for s in cat.skipped if s[0].split("/", 1)[0] in genres])
    return cat, all_genres


RUNNERS = ("local", "beam")


@dataclass(frozen=True)
class AugmentSummary:
    """What :func:`run_augment` did: counts of tracks and files, and where the manifest is."""

    out: str  # the feature folder
    manifest: str  # its manifest (a shard's own, with --shard)
    tracks: int  # tracks of this run (of this shard)
    ok: int  # ... rendered (now or by an earlier run)
    skipped_bad: int  # ... skipped: undecodable, silent, too short or too long
    resumed: int  # ... finished by an earlier run
    files: int  # feature files listed in the manifest
    missing_on_disk: int  # tracks named in the split that are not on disk
    unassigned: int  # tracks on disk that the split leaves out
    skipped_paths: int  # paths left out of the catalogue (links)

    def to_dict(self) -> dict:
        """The summary as a plain mapping (for JSON)."""
        return asdict(self)


def run_augment(data, out, settings: AugmentSettings | None = None, workers: int = 1,
                shard: tuple[int, int] | None = None, progress: bool = True, log=None,
                runner: str = "local", beam_options=(), out_flag: str = "--out") -> AugmentSummary:
    """Run the augmentation stage. Returns its :class:`AugmentSummary` (counts, paths).

    ``runner="beam"`` runs the same per-track jobs as an Apache Beam pipeline
    (:mod:`genrekit.data_tools.beam_runner`, options ``beam_options`` as ``KEY=VALUE``); the files,
    manifest and report are the same as the local path's.

    Everything that can be refused (options, the data folder, the split, an --out made with
    other settings) is checked before --out is created or anything is written in it."""
    settings = settings or AugmentSettings()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    beam_flags = _check_runner(workers, runner, beam_options)
    shard_kn = check_shard(shard)
    cat, all_genres = catalogue_for(data, list(settings.genres) if settings.genres else None)
    root, tracks = cat.root, cat.tracks
    out = Path(out).expanduser()
    _check_out(out, settings, tracks, out_flag)

    # 1. the split, before anything else
    split = _decide_split(tracks, all_genres, settings)
    _check_split_file(out / "splits.csv", split)
    _start_folder(out, settings, root, tracks, split)
    for path, why in cat.skipped:
        log(f"skipped {path}: {why}")

    # 2. per-track jobs
    todo = [t for t in tracks if t.track_id in split.assignment]
    if shard_kn:
        k, n = shard_kn
        todo = [t for i, t in enumerate(todo) if i % n == k - 1]
    jobs = [(t, split.assignment[t.track_id], root, out, settings) for t in todo]
    results = _run_jobs(jobs, out, workers, beam_flags, progress, log)

    # 3. manifest and report
    results.sort(key=lambda r: r.track_id)
    rows = [row for r in results for row in r.rows]
    suffix = f".shard-{shard_kn[0]}-of-{shard_kn[1]}" if shard_kn else ""
    manifest_path = out / (f"manifest{suffix}.csv" if suffix else MANIFEST_NAME)
    write_manifest(manifest_path, rows)
    report = build_report(root, settings, split, results, rows, shard_kn, cat.skipped)
    write_text_atomic(out / f"report{suffix}.md", report)
    for r in results:
        if r.status != "ok":
            log(f"skipped {r.track_id}: {r.status}: {r.message}")
    return AugmentSummary(
        out=str(out), manifest=str(manifest_path), tracks=len(results),
        ok=sum(r.status == "ok" for r in results),
        skipped_bad=sum(r.status != "ok" for r in results),
        resumed=sum(r.skipped for r in results), files=len(rows),
        missing_on_disk=len(split.missing_on_disk), unassigned=len(split.unassigned),
        skipped_paths=len(cat.skipped))


def _check_runner(workers: int, runner: str, beam_options) -> list | None:
    """Refuse bad --workers / --runner / --beam-option values; the Beam flags (None: local)."""
    if workers < 1:
        raise DataError("--workers must be at least 1")
    if runner not in RUNNERS:
        raise DataError(f"unknown --runner {runner!r} (known: {', '.join(RUNNERS)})")
    if beam_options and runner != "beam":
        raise DataError("--beam-option needs --runner beam")
    return beam_runner.beam_flags(beam_options, workers) if runner == "beam" else None


def _check_out(out: Path, settings: AugmentSettings, tracks: list[Track], out_flag: str) -> None:
    """Refuse an --out that is not augment's folder, was made with other settings, or holds links
    where augment writes."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")
    own_folder_marker(out, SETTINGS_NAME, out_flag, "genrekit augment")  # never a user's folder
    _check_settings(out, settings)
    check_no_links(out, [STATE_DIR, *{Path(get_kind(k).relpath(t.track_id, "original", 0)).parent
                                      for k in settings.kinds for t in tracks}], out_flag,
                   files=(MANIFEST_NAME, "report.md", "splits.csv", SETTINGS_NAME, CONFIG_NAME))


def _check_split_file(splits_path: Path, split: SplitResult) -> None:
    """Refuse an --out whose splits.csv differs from the split the settings give now."""
    if not splits_path.is_file():
        return
    try:
        old = read_splits_csv(splits_path)
    except (OSError, UnicodeDecodeError, KeyError):
        raise DataError(f"{splits_path} is unreadable; choose a new --out") from None
    if old != split.assignment:
        raise DataError(f"{splits_path} differs from the split these settings give now "
                        "(did the data change?); choose a new --out")


def _start_folder(out: Path, settings: AugmentSettings, root: Path, tracks: list[Track],
                  split: SplitResult) -> None:
    """Create --out (the inputs are valid: only now), clear its stale temporaries and write its
    settings, split and feature config."""
    check_writable(out)
    remove_stale_temporaries(out)  # its own folders only: never a user's file elsewhere in --out
    for sub in (STATE_DIR, *kind_names()):
        remove_stale_temporaries(out / sub, recursive=True)
    settings_doc = settings.to_dict() | {"data_root": str(root)}
    write_json_atomic(out / SETTINGS_NAME, settings_doc)  # first: it marks the folder as augment's
    if not (out / "splits.csv").is_file():
        write_splits_csv(out / "splits.csv", tracks, split)
    settings.features.save(out)


def _run_jobs(jobs: list, out: Path, workers: int, beam_flags, progress: bool,
              log) -> list[TrackResult]:
    """Run the per-track jobs with Beam, in this process or in worker processes."""
    results: list[TrackResult] = []
    bar = _progress(len(jobs), progress and beam_flags is None)
    try:
        if beam_flags is not None:
            results = beam_runner.run_beam(jobs, out, beam_flags, log, process_track, TrackResult)
        elif workers == 1 or len(jobs) <= 1:
            from threadpoolctl import threadpool_limits

            # one BLAS thread, as in the workers: multi-threaded sums differ in the last bit
            with threadpool_limits(limits=1):
                for j in jobs:
                    results.append(process_track(j))
                    bar.update(1)
        else:
            results = _run_pool(jobs, workers, bar)
    finally:
        bar.close()
    return results


def _run_pool(jobs: list, workers: int, bar) -> list[TrackResult]:
    """Run jobs in worker processes. A worker that dies (killed by the out-of-memory killer,
    a crash in a C library) breaks the pool: that is reported with one line, never waited on
    forever; the tracks finished so far are kept and a rerun resumes."""
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    if ctx.get_start_method() == "fork":
        _preload()  # imported once here, inherited by every worker instead of imported by each
    results: list[TrackResult] = []
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        pending = {pool.submit(process_track, j): j[0].track_id for j in jobs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                tid = pending.pop(fut)
                try:
                    results.append(fut.result())
                except BrokenProcessPool:
                    running = sorted([tid, *pending.values()])[:3]
                    raise DataError(
                        f"an augment worker process died (killed by the system, out of memory?) while "
                        f"processing one of {', '.join(running)}{' …' if len(pending) > 2 else ''}; "
                        f"{len(results)} tracks finished are kept: rerun to resume, with fewer --workers "
                        "or a lower --max-seconds") from None
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="track", desc="augment", disable=not enabled or None,
                file=sys.stderr, dynamic_ncols=True)


def build_report(root: Path, settings: AugmentSettings, split: SplitResult,
                 results: list[TrackResult], rows: list[dict], shard_kn=None,
                 catalogue_skipped: list[tuple[str, str]] = ()) -> str:
    """``report.md`` of an augment: the settings, a table per genre, skipped, padded and
    unassigned tracks, and the feature files per kind, split and augmentation."""
    L = ["# genrekit augment report", ""]
    L.append(f"- data: `{root}`")
    L.append(f"- split: {split.source}")
    L.append(f"- seed: {settings.seed}")
    L.append(f"- longest file accepted: {settings.max_seconds:g} s")
    if shard_kn:
        L.append(f"- shard {shard_kn[0]} of {shard_kn[1]}")
    fc = settings.features
    floor = f", floor -{fc.top_db:g} dB" if any(get_kind(k).floored for k in settings.kinds) else ""
    L.append(f"- features: {', '.join(settings.kinds)}; {fc.sr} Hz, n_fft {fc.n_fft}, hop {fc.hop_length}, "
             f"{fc.n_mels} mels{floor}; {'; '.join(settings_words(fc, k) for k in settings.kinds)} "
             f"(config fingerprint {fc.fingerprint()})")
    L.append(f"- train-split variants: {', '.join(v.name for v in settings.augment.variants())}")
    L += ["", "## Catalogue", "",
          "| genre | tracks | ok | bad | silent | too short | too long | duration min-max (s) | train | valid | test |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    by_genre = defaultdict(list)
    for r in results:
        by_genre[r.genre].append(r)
    for g in sorted(by_genre):
        rs = by_genre[g]
        st = Counter(r.status for r in rs)
        durs = [r.duration_s for r in rs if r.duration_s > 0]
        rng = f"{min(durs):.2f}-{max(durs):.2f}" if durs else "-"
        sp = Counter(r.split for r in rs if r.status == "ok")
        L.append(f"| {g} | {len(rs)} | {st['ok']} | {st['bad']} | {st['silent']} | {st['short']} | {st['long']} | {rng} "
                 f"| {sp['train']} | {sp['valid']} | {sp['test']} |")
    problems = [r for r in results if r.status != "ok"]
    if problems:
        L += ["", "## Skipped files", ""]
        L += [f"- `{r.track_id}`: {r.status}: {r.message}" for r in problems]
    if catalogue_skipped:
        L += ["", "## Left out of the catalogue (links)", ""]
        L += [f"- `{p}`: {why}" for p, why in catalogue_skipped]
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

