"""Task plug-ins own their behaviour (issue 24): a task registered by a test alone trains,
predicts, evaluates and exports through the commands' own code, and no module outside the
plug-ins and the architecture registry compares task or architecture names."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from genrekit import tasks
from genrekit.data_tools.features import FeatureConfig, get_kind
from genrekit.data_tools.loaders import label_ids, load_arrays, select
from genrekit.data_tools.manifest import read_manifest
from genrekit.errors import UserError
from genrekit.evaluate import evaluate
from genrekit.export import export_bundle
from genrekit.models.registry import REGISTRY, ArchSpec, get_arch
from genrekit.predict import predict_files
from genrekit.prediction import predict_rows
from genrekit.runs import Run
from genrekit.tasks import TASKS, task_for, task_of
from genrekit.tasks.base import TaskPlugin
from genrekit.train import TrainOptions, train
from genrekit.training import Plan, compile_classifier, evaluate_splits

ROOT = Path(__file__).resolve().parents[1]


# -- a toy task: the mean MFCC frame of each window, one softmax layer ------------------------------

def build_toy(input_shape, num_classes: int, units: int = 0):
    """The toy model: the mean over frames of an MFCC window, then a softmax."""
    import keras

    inp = keras.Input(shape=tuple(input_shape))
    x = keras.layers.GlobalAveragePooling1D()(inp)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out)


class ToyTask(TaskPlugin):
    """Genres from the mean MFCC frame; its model card says what it is."""

    name = "toy"

    def plan(self, opts, spec) -> Plan:
        data = Path(opts.data)
        rows = read_manifest(data)
        return Plan(data=data, fc=FeatureConfig.load(data), rows=rows, kind=spec.feature,
                    labels=sorted({r["genre"] for r in rows}), train_rows=select(rows, spec.feature, ("train",)),
                    valid_rows=select(rows, spec.feature, ("valid",)), phase="scratch", tag="toy",
                    title="toy", epochs=opts.epochs or 2, lr=0.01)

    def build(self, plan, opts, spec):
        model = build_toy(get_kind(plan.kind).input_shape(plan.fc), len(plan.labels))
        compile_classifier(model, opts, plan.lr, False)
        return model

    def fit(self, plan, opts, model, callbacks) -> dict:
        def xy(rs):
            return load_arrays(plan.data, rs, plan.kind), label_ids(rs, plan.labels)

        model.fit(*xy(plan.train_rows), validation_data=xy(plan.valid_rows), epochs=plan.epochs,
                  batch_size=opts.batch_size, callbacks=callbacks, verbose=0)
        return {}

    def figures(self, plan, opts, model, run_dir) -> dict:
        return evaluate_splits(lambda rs: predict_rows(model, plan.data, rs, plan.kind), plan.rows, plan.labels,
                               plan.kind)

    def card_output(self, run) -> str:
        return f"toy: softmax over {len(run.labels)} genres from the mean MFCC frame"


@pytest.fixture
def toy_task(monkeypatch):
    """The toy task and its architecture, registered for one test (undone after it)."""
    spec = ArchSpec("toy_mean", build_toy, "mfcc", ("scratch",), "toy: mean MFCC frame + softmax",
                    layers=("predictions",), task="toy_genres", plugin="toy")
    task = ToyTask()
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    monkeypatch.setitem(TASKS, task.name, task)
    return task


@pytest.mark.slow
def test_a_registered_toy_task_trains_predicts_evaluates_and_exports(toy_task, tiny_features, tmp_path):
    res = train(TrainOptions(data=str(tiny_features), arch="toy_mean", task="toy_genres",
                             out=str(tmp_path / "run"), epochs=2, batch_size=8, verbose=0))
    run = Run(res.run)
    assert task_of(run) is toy_task and run.arch == "toy_mean" and res.phase == "toy"
    assert set(res.metrics) == {"valid", "test"} and 0 <= res.metrics["test"]["track"]["top1"] <= 1
    for name in ("model.keras", "labels.json", "config.json", "history.csv", "train_metrics.json"):
        assert (run.path / name).is_file(), name

    root = Path(json.loads((tiny_features / "augment_config.json").read_text())["data_root"])
    clip = next(root.rglob("*.wav"))
    [r] = predict_files([str(clip)], run.path, top_k=2)
    assert "error" not in r and len(r["top"]) == 2 and r["top"][0]["genre"] in run.labels
    assert sum(t["probability"] for t in r["top"]) <= 1.0 + 1e-6

    ev = evaluate(run.path, tiny_features, split="test")
    assert ev["arch"] == "toy_mean" and ev["track"]["n"] > 0
    assert (run.path / "eval" / "test" / "metrics.json").is_file()
    assert (run.path / "eval" / "test" / "confusion.png").is_file()

    bundle = export_bundle(run.path, ["keras"], tmp_path / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    assert card["arch"] == "toy_mean" and card["output"]["probabilities"].startswith("toy: softmax over 3")
    assert (bundle / "model.keras").is_file()


def test_the_registry_picks_plug_ins_from_the_architecture():
    assert task_for(get_arch("musicnn_lr")) is TASKS["genre_track"]
    assert task_for(get_arch("cnn")) is TASKS["genre_windows"]
    assert task_for(get_arch("tempocnn"), "tempo") is TASKS["tempo"]
    assert task_for(get_arch("fusion")) is TASKS["fusion"]
    with pytest.raises(UserError, match="regresses tempo: train it with --task tempo"):
        task_for(get_arch("tempocnn"), "genre")
    with pytest.raises(UserError, match="cnn is a genre classifier; --task tempo trains tempocnn"):
        task_for(get_arch("cnn"), "tempo")
    with pytest.raises(UserError, match="unknown task 'beat'"):
        task_for(get_arch("cnn"), "beat")
    assert all(s.plugin in TASKS for s in REGISTRY.values())  # every architecture has its plug-in
    assert tasks.format_results({"track": {}}) is None


# -- no name comparisons outside the plug-ins --------------------------------------------------------

# `x.task == "genre"`, `arch != 'fusion'`, `spec.name in ("a", "b")`, `config.get("task") == "tempo"`...
_SUBJECT = r"""(?:\b(?:task|arch)\b|\.(?:task|arch)\b|\bspec\.name\b|\.get\(\s*["'](?:task|arch)["']\s*(?:,[^)]*)?\)|\[\s*["'](?:task|arch)["']\s*\])"""
_COMPARED = re.compile(_SUBJECT + r"""\s*(?:==|!=|\bnot\s+in\b|\bin\b)\s*[\"'(\[{]""")
_ALLOWED = ("genrekit/tasks/", "models/registry.py")


def name_comparisons(text: str) -> list[str]:
    """The lines of ``text`` that compare a task or architecture name with a literal."""
    return [ln.strip() for ln in text.splitlines() if _COMPARED.search(ln) and not ln.lstrip().startswith("#")]


def test_the_name_check_sees_every_form():
    for line in ('if run.task == "genre":', "x = a if run.arch != 'fusion' else b", 'if spec.name == "fusion":',
                 'if task in ("genre", "tempo"):', 'if opts.task not in ("genre", "tempo"):',
                 'if res.get("task") == "tempo":', 'if c.get("task", "genre") not in ("genre", "tempo"):', 'ok = cfg["arch"] in {"cnn"}', 'if arch != "vgg16":'):
        assert name_comparisons(line), line
    for line in ('if task_of(run).classifies:', 'arch = a.arch or default_arch(a.task)', 'task = "genre"',
                 'if arch not in cv_arch_names():'):
        assert not name_comparisons(line), line


def test_no_task_or_arch_name_is_compared_outside_the_plug_ins():
    found = []
    for folder in ("genrekit", "data_tools", "models", "evaluation"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith(_ALLOWED):
                continue
            found += [f"{rel}: {ln}" for ln in name_comparisons(path.read_text(encoding="utf-8"))]
    assert not found, "compare names in a task plug-in instead:\n" + "\n".join(found)


def test_every_plug_in_answers_the_run_questions():
    for task in TASKS.values():
        assert isinstance(task, TaskPlugin)
        for flag in ("classifies", "batchable", "embeds"):
            assert isinstance(getattr(task, flag), bool), (task.name, flag)
    assert not TASKS["tempo"].classifies and TASKS["tempo"].answer_fields(np.array([120.04])) == {"bpm": 120.0}
    assert not TASKS["fusion"].batchable and not TASKS["fusion"].embeds
