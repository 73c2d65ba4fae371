"""Run folders: self-describing (model.keras, labels.json, config.json, history.csv)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from data_tools.features import FeatureConfig
from data_tools.fsio import write_json_atomic
from genrekit.errors import UserError

MODEL = "model.keras"
LABELS = "labels.json"
CONFIG = "config.json"
HISTORY = "history.csv"
TEMPO_MODEL = "tempo_model.keras"  # a fusion run's copy of its tempo regressor


def new_run_dir(out: str | None, arch: str, phase: str, root: str = "runs") -> Path:
    path = Path(out) if out else Path(root) / f"{arch}-{phase}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (path / MODEL).exists():
        raise UserError(f"run folder {path} already holds a model; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run folder {path}: {exc.strerror or exc}") from None
    return path


def library_versions() -> dict:
    import importlib.metadata as md

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
            self.config = json.loads((self.path / CONFIG).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"unreadable run folder {self.path}: {exc}") from None
        if self.config.get("task") == "gan":
            raise UserError(f"{self.path} is a GAN run: use it with `genrekit gan generate`, not as a classifier")
        for name in (MODEL, LABELS):
            if not (self.path / name).is_file():
                raise UserError(f"{self.path} is not a complete run folder: {name} is missing")
        try:
            self.labels = json.loads((self.path / LABELS).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"unreadable run folder {self.path}: {exc}") from None
        if "arch" not in self.config or "feature_config" not in self.config:
            raise UserError(f"{self.path}/{CONFIG} is not a genrekit classifier config")
        self.feature_config = FeatureConfig.from_dict(self.config["feature_config"])
        self.kind = self.config["feature_kind"]
        self._model = None
        self._tempo_model = None

    @property
    def arch(self) -> str:
        return self.config["arch"]

    @property
    def task(self) -> str:
        return self.config.get("task", "genre")

    @property
    def input_kinds(self) -> tuple[str, ...]:
        """The feature kinds the run reads: a fusion run also needs tempogram windows."""
        return (self.kind, "tempogram") if self.arch == "fusion" else (self.kind,)

    def tempo_model(self):
        """A fusion run's own copy of its tempo regressor."""
        if self._tempo_model is None:
            path = self.path / TEMPO_MODEL
            if not path.is_file():
                raise UserError(f"{self.path} is not a complete fusion run: {TEMPO_MODEL} is missing")
            self._tempo_model = load_model(path)
        return self._tempo_model

    def predict_rows(self, folder, rows: list[dict], batch_size: int = 32):
        """Class probabilities for manifest rows of a feature folder made with the run's config."""
        if self.arch == "fusion":
            from genrekit.fusion import fusion_inputs

            return self.model().predict(fusion_inputs(self, folder, rows), batch_size=batch_size, verbose=0)
        from genrekit.train import predict_rows

        return predict_rows(self.model(), folder, rows, self.kind, batch_size)

    def model(self):
        if self._model is None:
            self._model = load_model(self.path / MODEL)
            n_out = self._model.output_shape[-1]
            if n_out != len(self.labels):
                raise UserError(f"{self.path}: labels.json has {len(self.labels)} classes but the model "
                                f"outputs {n_out}")
        return self._model


def load_model(path):
    """Load a .keras file in Keras' safe mode (nothing in the file is executed)."""
    import keras

    try:
        return keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except ValueError as exc:
        raise UserError(f"cannot load model {path} safely: {str(exc).splitlines()[0]}") from None


def write_config(path: Path, config: dict) -> None:
    write_json_atomic(path / CONFIG, config, only_if_changed=False)
