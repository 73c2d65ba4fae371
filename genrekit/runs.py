"""Run folders: self-describing (model.keras, labels.json, config.json, history.csv), made
complete-or-absent and read back (this module imports neither training nor prediction).

Every output is complete-or-absent: it is built under a genrekit-own temporary name next to
its final place (``.genrekit-tmp-<pid>-<name>``, a folder holding genrekit's marker file) and
renamed into place only when complete. While it is built, the process's temporary folder
(Python's ``tempfile`` and ``TMPDIR``, used by TensorFlow, Keras and the converters) points
inside it, so a killed command leaves nothing in the system temporary folder either; the next
genrekit command writing next to it removes what a dead process left (and only that).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

from genrekit.data_tools.features import FeatureConfig, fingerprint_of, get_kind, kind_names
from genrekit.data_tools.fsio import TempScheme, loads_json, write_json_atomic
from genrekit.data_tools.fsio import remove_stale_temporaries as fsio_remove_stale
from genrekit.errors import UserError
from genrekit.models import REGISTRY
from genrekit.models.registry import task_names
from genrekit.models.track import is_track_model
from genrekit.multidata import collection_of

MODEL = "model.keras"
GAN_TASK = "gan"  # config.json's task of a `genrekit gan train` folder (not a classifier run)
LABELS = "labels.json"
CONFIG = "config.json"
HISTORY = "history.csv"
TEMPO_MODEL = "tempo_model.keras"  # a fusion run's copy of its tempo regressor
CALIBRATION = "calibration.json"  # temperature and rejection threshold fitted on the valid split

TMP_PREFIX = ".genrekit-tmp-"  # .genrekit-tmp-<pid>-<final name>: something being built
OLD_PREFIX = ".genrekit-old-"  # .genrekit-old-<pid>-<final name>: a replaced output, removed after the swap
TMP_MARKER = "genrekit-temporary.json"  # inside every temporary folder genrekit makes
EXPORT_MARKER = "genrekit_export.json"  # inside every SavedModel folder genrekit exports


def _ours(path: Path) -> bool:
    """A temporary folder genrekit made on this machine (its marker names this host)."""
    try:
        marker = loads_json((path / TMP_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("host") == socket.gethostname()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def _remove_temporary(p: Path, match: re.Match) -> int:
    if p.is_file() or _ours(p):  # a folder only when it holds genrekit's marker
        _remove(p)
        return 1
    return 0


def _put_back(p: Path, match: re.Match) -> int:
    if not (p.is_file() or _ours(p) or (p / EXPORT_MARKER).is_file()):
        return 0
    final = p.parent / match.group("name")
    if not final.exists() and not final.is_symlink():
        os.rename(p, final)
    else:
        _remove(p)
    return 1


# .genrekit-tmp-<pid>-<final name> and .genrekit-old-<pid>-<final name>
TEMPORARIES = TempScheme(re.compile(re.escape(TMP_PREFIX) + r"(?P<pid>\d+)-(?P<name>.+)\Z", re.DOTALL),
                         _remove_temporary)
REPLACED = TempScheme(re.compile(re.escape(OLD_PREFIX) + r"(?P<pid>\d+)-(?P<name>.+)\Z", re.DOTALL), _put_back)


def remove_stale_temporaries(parent) -> int:
    """Remove what killed genrekit processes left in ``parent`` (not below it): entries named
    ``.genrekit-tmp-<pid>-*`` whose process is gone (folders only when they hold genrekit's
    marker). A replaced output parked as ``.genrekit-old-<pid>-NAME`` by a killed swap is put
    back as NAME when NAME is missing, else removed. Returns how many entries were handled."""
    return fsio_remove_stale(parent, schemes=(TEMPORARIES, REPLACED))


@contextmanager
def private_tempdir(folder: Path):
    """Point Python's ``tempfile`` and ``TMPDIR`` at ``folder`` while the block runs."""
    folder.mkdir(parents=True, exist_ok=True)
    old_dir, old_env = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = old_dir
        if old_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old_env


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create folder {folder}: {exc.strerror or exc}") from None
    return list(reversed(missing))


def _swap_in(work: Path, final: Path, replace: bool) -> None:
    if not final.exists() and not final.is_symlink():
        os.rename(work, final)
        return
    if final.is_dir() and not final.is_symlink() and work.is_dir() and not any(final.iterdir()):
        os.rename(work, final)  # an empty folder is replaced atomically
        return
    if not replace:
        raise UserError(f"{final} already exists; choose another --out")
    if work.is_file() and final.is_file():
        os.replace(work, final)
        return
    old = final.with_name(f"{OLD_PREFIX}{os.getpid()}-{final.name}")
    os.rename(final, old)
    try:
        os.rename(work, final)
    except BaseException:
        os.rename(old, final)
        raise
    _remove(old)


def make_temporary_folder(holder: Path, final_name: str) -> None:
    """Create ``holder`` (named ``.genrekit-tmp-<pid>-...``) with genrekit's marker inside, so that
    :func:`remove_stale_temporaries` removes it once this process is gone."""
    holder.mkdir()
    (holder / TMP_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                 "final": final_name}) + "\n", encoding="utf-8")


@contextmanager
def atomic_output(final, folder: bool, replace: bool = False):
    """Yield a path to write instead of ``final`` (a file path with the same name, or an empty
    folder); once the block completes it is renamed to ``final``. On any failure (or kill) the
    previous ``final``, if any, is untouched and nothing is left behind: the work happens in
    ``<parent>/.genrekit-tmp-<pid>-<name>/``, which also serves as the process's temporary folder
    meanwhile. ``replace``: an existing ``final`` (the caller checked it is genrekit's) may be
    replaced; otherwise only a missing ``final`` or an empty folder is."""
    final = Path(os.path.abspath(final))
    if not final.name or final.parent == final:
        raise UserError(f"--out {final} names no file or folder to create")
    created = make_folders(final.parent)
    remove_stale_temporaries(final.parent)
    holder = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{final.name}")
    if holder.exists() and _ours(holder):
        shutil.rmtree(holder)
    ok = False
    try:
        make_temporary_folder(holder, final.name)
        work = holder / final.name
        if folder:
            work.mkdir()
        with private_tempdir(holder / ".tmp"):
            yield work
        _swap_in(work, final, replace)
        ok = True
    finally:
        shutil.rmtree(holder, ignore_errors=True)
        if not ok:
            for d in reversed(created):
                try:
                    d.rmdir()
                except OSError:
                    break


def default_run_path(arch: str, phase: str, root: str = "runs") -> Path:
    """``--out``'s default: ``ROOT/<arch>-<phase>-<date>-<time>``.

    >>> default_run_path("cnn", "scratch").as_posix()
    'runs/cnn-scratch-...'"""
    return Path(root) / f"{arch}-{phase}-{time.strftime('%Y%m%d-%H%M%S')}"


def enclosing_owner(path) -> tuple[Path, str] | None:
    """The nearest folder above ``path`` that is a run folder or an export bundle, with what it
    is (``"a run folder"``, ``"an export bundle"``), or None: genrekit never writes into one."""
    for folder in Path(os.path.abspath(path)).parents:
        if (folder / EXPORT_MARKER).is_file():
            return folder, "an export bundle"
        if (folder / CONFIG).is_file() and ((folder / MODEL).exists() or (folder / LABELS).exists()):
            return folder, "a run folder"
    return None


def refuse_inside_owner(path, flag: str = "--out") -> None:
    """One line when ``path`` lies inside a run folder or an export bundle."""
    owner = enclosing_owner(path)
    if owner is not None:
        raise UserError(f"{flag} {path} lies inside {owner[1]} ({owner[0]}); genrekit does not write into a run's "
                        "or bundle's folder: give a path outside it")


def check_new_run_path(path: Path) -> None:
    """Refuse a --out that already holds something, or that lies inside another run folder or
    an export bundle: a run folder is only ever made new, beside the others."""
    refuse_inside_owner(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UserError(f"--out {path} exists and is not a folder; choose another --out")
    if path.is_dir():
        if (path / CONFIG).exists():
            raise UserError(f"run folder {path} already holds a run; choose another --out")
        if (path / MODEL).exists() or (path / "generator.keras").exists():
            raise UserError(f"{path} holds an incomplete run (no {CONFIG}: an older genrekit was stopped while "
                            "writing it); delete it yourself or choose another --out")
        if any(path.iterdir()):
            raise UserError(f"--out {path} is a folder that is not empty; a run folder is made new: "
                            "choose another --out")


@contextmanager
def run_folder(out, arch: str, phase: str, root: str = "runs"):
    """A new run folder, complete-or-absent: yields ``(work, final)``; write everything into
    ``work`` (a temporary folder next to ``final``); it becomes ``final`` when the block
    completes, and vanishes if it fails or the process is killed."""
    final = Path(out) if out else default_run_path(arch, phase, root)
    check_new_run_path(final)
    with atomic_output(final, folder=True) as work:
        yield work, final


def library_versions() -> dict:
    """The installed versions of genrekit and the libraries its results depend on."""
    out = {}
    for pkg in ("genrekit", "tensorflow", "keras", "numpy", "librosa", "audiomentations", "scikit-learn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


class Run:
    """A finished run folder, read back."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"run folder not found: {self.path}")
        if not (self.path / CONFIG).is_file():
            raise UserError(f"{self.path} is not a complete run folder: {CONFIG} is missing")
        try:
            self.config = loads_json((self.path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"unreadable run folder {self.path}: {exc}") from None
        if not isinstance(self.config, dict):
            raise UserError(f"{self.path}/{CONFIG} is not a genrekit run config")
        if self.config.get("task") == GAN_TASK:
            raise UserError(f"{self.path} is a GAN run: use it with `genrekit gan generate`, not as a classifier")
        for name in (MODEL, LABELS):
            if not (self.path / name).is_file():
                raise UserError(f"{self.path} is not a complete run folder: {name} is missing")
        try:
            self.labels = loads_json((self.path / LABELS).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"unreadable run folder {self.path}: {exc}") from None
        self._check_config()
        self._model = None
        self._tempo_model = None
        self._calibration = None
        _ = self.calibration  # an edited calibration.json is refused here, before any work

    def _check_config(self) -> None:
        """A run's config.json and labels.json are read back, not trusted: an edited one is
        refused with one line."""
        where = f"{self.path}/{CONFIG}"
        c = self.config
        if "arch" not in c or "feature_config" not in c:
            raise UserError(f"{where} is not a genrekit classifier config")
        if not isinstance(c["arch"], str) or c["arch"] not in REGISTRY:
            raise UserError(f"{where}: unknown architecture {c['arch']!r}")
        if c.get("task", "genre") not in task_names():
            raise UserError(f"{where}: unknown task {c.get('task')!r}")
        if c.get("feature_kind") not in kind_names():
            raise UserError(f"{where}: unknown feature kind {c.get('feature_kind')!r}")
        labels = self.labels
        if (not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels)
                or len(set(labels)) != len(labels)):
            raise UserError(f"{self.path}/{LABELS} is not a list of distinct class names")
        if not isinstance(c["feature_config"], dict):
            raise UserError(f"{where}: feature_config is not a mapping")
        try:
            self.feature_config = FeatureConfig.from_dict(c["feature_config"])
        except Exception as exc:  # noqa: BLE001 - any bad value in an edited file is the file's fault
            raise UserError(f"{where}: bad feature_config: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        recorded = c.get("feature_fingerprint")
        if recorded is not None and recorded != fingerprint_of(c["feature_config"]):  # as written at training
            raise UserError(f"{where}: feature_config does not match its feature_fingerprint {recorded!r} "
                            "(the file was edited); the model was trained with other features")
        cols = (c.get("data") or {}).get("collections") if isinstance(c.get("data"), dict) else None
        if cols is not None and not (isinstance(cols, list) and all(
                isinstance(e, dict) and isinstance(e.get("track_prefix", ""), str)
                and isinstance(e.get("folder", ""), str)
                and isinstance(e.get("weight", 1.0), (int, float)) and not isinstance(e.get("weight", 1.0), bool)
                and math.isfinite(e.get("weight", 1.0)) for e in cols)):
            raise UserError(f"{where}: data.collections is not a list of folder records (the file was edited)")
        for key in ("tempo_range",):
            v = c.get(key)
            if v is not None and not (isinstance(v, list) and len(v) == 2
                                      and all(isinstance(x, (int, float)) and math.isfinite(x) for x in v)
                                      and v[0] < v[1]):
                raise UserError(f"{where}: bad {key} {v!r}")
        self.kind = c["feature_kind"]

    @property
    def arch(self) -> str:
        """The architecture the run trained (``config.json``'s ``arch``)."""
        return self.config["arch"]

    @property
    def calibration(self) -> dict:
        """The run's ``calibration.json`` (temperature, rejection threshold, how they were fitted),
        read back and checked; ``{}`` for a run made before calibration existed (or a tempo run)."""
        if self._calibration is None:
            p = self.path / CALIBRATION
            if not p.is_file():
                self._calibration = {}
            else:
                where = f"{self.path}/{CALIBRATION}"
                try:
                    cal = loads_json(p.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, ValueError) as exc:
                    raise UserError(f"{where} is damaged: {' '.join(str(exc).split()) or type(exc).__name__}") from None
                if not isinstance(cal, dict):
                    raise UserError(f"{where} is not a genrekit calibration file")
                t = cal.get("temperature", 1.0)
                if not (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t > 0):
                    raise UserError(f"{where}: bad temperature {t!r} (a finite number above 0)")
                th = cal.get("reject_threshold")
                if th is not None and not (isinstance(th, (int, float)) and not isinstance(th, bool)
                                           and math.isfinite(th) and 0 <= th <= 1):
                    raise UserError(f"{where}: bad reject_threshold {th!r} (a probability in [0, 1])")
                self._calibration = cal
        return self._calibration

    @property
    def temperature(self) -> float:
        """Temperature T fitted on the validation split (probabilities p become p^(1/T),
        renormalised); 1.0 (no change) for a run without calibration."""
        return float(self.calibration.get("temperature", 1.0))

    @property
    def reject_threshold(self) -> float | None:
        """Minimum calibrated top probability for ``predict --reject`` to name a genre (below it:
        ``unknown``), chosen on the validation split; None when the run has none."""
        th = self.calibration.get("reject_threshold")
        return None if th is None else float(th)

    @property
    def task(self) -> str:
        """The run's task (``config.json``'s ``task``; ``"genre"`` when it names none)."""
        return self.config.get("task", "genre")

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The feature kinds the run reads (its architecture's ``extra_kinds`` too: a fusion run
        also needs tempogram windows)."""
        return (self.kind, *self._spec_field("extra_kinds"))

    def _spec_field(self, name: str) -> tuple:
        spec = REGISTRY.get(self.arch)
        return getattr(spec, name) if spec is not None else ()

    def tempo_model(self):
        """A fusion run's own copy of its tempo regressor."""
        if self._tempo_model is None:
            path = self.path / TEMPO_MODEL
            if not path.is_file():
                raise UserError(f"{self.path} is not a complete fusion run: {TEMPO_MODEL} is missing")
            model = load_model(path)
            check_model_inputs(model, self.feature_config, ("tempogram",), f"{self.path}/{TEMPO_MODEL}")
            self._tempo_model = model
        return self._tempo_model

    def model(self):
        """The run's Keras model (``model.keras``), loaded once and checked against the feature
        config and ``labels.json``."""
        if self._model is None:
            model = load_model(self.path / MODEL)
            check_model_inputs(model, self.feature_config, self.input_kinds[:1], str(self.path),
                               extra=self._spec_field("extra_inputs"))
            n_out = model.output_shape[-1]
            if n_out != len(self.labels):
                raise UserError(f"{self.path}: labels.json has {len(self.labels)} classes but the model "
                                f"outputs {n_out}")
            self._model = model
        return self._model


def _shape_text(shapes) -> str:
    return ", ".join("(" + ", ".join("None" if d is None else str(d) for d in s) + ")" for s in shapes)


def check_model_inputs(model, fc: FeatureConfig, kinds, where: str, extra=()) -> None:
    """Refuse a model whose inputs do not fit the windows the run's feature config gives (e.g.
    another run's model.keras copied into the folder): one line instead of a shape error deep in
    TensorFlow. ``kinds``: the feature kind of each windowed input; ``extra``: the shapes (after
    the batch axis) of further inputs, such as the fusion model's tempo. A track model's inputs
    carry a free windows axis after the batch axis."""
    inputs = getattr(model, "inputs", None)
    if not inputs:
        return
    track = is_track_model(model)
    lead = (None, None) if track else (None,)
    wanted = [lead + tuple(get_kind(k).input_shape(fc)) for k in kinds] + [(None, *e) for e in extra]
    got = [tuple(getattr(t, "shape", ()) or ()) for t in inputs]

    def fits(g, w):
        return len(g) == len(w) and all(a is None or b is None or a == b for a, b in zip(g, w, strict=True))

    if len(got) != len(wanted) or not all(fits(g, w) for g, w in zip(got, wanted, strict=False)):
        raise UserError(f"the model in {where} expects inputs of shape {_shape_text(got)} but the run's feature "
                        f"config gives {_shape_text(wanted)} ({', '.join(kinds)} windows); its model file does "
                        "not belong to this run (copied from another run?): retrain it or use the run it came from")


def check_feature_config(run: Run, data: Path) -> FeatureConfig:
    """The feature folder ``data`` was made with the run's feature config (or a one-line error)."""
    fc = FeatureConfig.load(data)
    if fc.fingerprint() != run.feature_config.fingerprint():
        diff = sorted(k for k, v in fc.to_dict().items() if run.feature_config.to_dict().get(k) != v)
        raise UserError(f"{data} was made with another feature config than the run's "
                        f"(differs in: {', '.join(diff)}); render the data with the run's config")
    return fc


def check_leakage(run: Run, track_ids, folder=None) -> None:
    """Refuse to score a run on tracks it was trained on. A run trained on several --data
    folders knows the later folders' tracks by a prefix (``2:...``): the ids of ``folder``, one
    of them, get its prefix; those of a folder it does not name are compared with and without."""
    data = run.config.get("data", {})
    trained = set(data.get("train_tracks", []))
    ids = set(map(str, track_ids))
    if data.get("collections"):
        own = collection_of(run.config, folder) if folder is not None else None
        if own is not None:
            ids = {own.get("track_prefix", "") + t for t in ids}
        else:
            prefixes = [c.get("track_prefix") for c in data["collections"] if c.get("track_prefix")]
            trained |= {t[len(p):] for t in trained for p in prefixes if t.startswith(p)}
    overlap = sorted(trained & ids)
    if overlap:
        raise UserError(f"refusing to evaluate: {len(overlap)} of these tracks were in the run's training data "
                        f"(e.g. {overlap[0]}); evaluating on them would inflate the figures")


def load_model(path):
    """Load a .keras file in Keras' safe mode (nothing in the file is executed)."""
    import keras

    import genrekit.models.track_layers  # noqa: F401 - registers genrekit's own layers (track pooling) for deserialisation

    if str(path).endswith(".keras") and Path(path).is_file() and not zipfile.is_zipfile(path):
        raise UserError(f"model file {path} is unreadable: truncated or corrupt (not a complete .keras archive)")
    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - a tampered or truncated file: one line, never a traceback
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise UserError(f"cannot load model {path} safely: {first}") from None


def write_config(path: Path, config: dict) -> None:
    """Write ``config`` as the run folder ``path``'s ``config.json`` (atomically)."""
    write_json_atomic(path / CONFIG, config, only_if_changed=False)
