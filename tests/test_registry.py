"""The architecture registry: plain imported builders, each model has the layers its spec
declares, and importing the registry does not load TensorFlow."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genrekit.models import registry
from genrekit.models.errors import ModelError
from genrekit.models.registry import REGISTRY, build_model, get_arch

ROOT = Path(__file__).resolve().parents[1]
TINY = {"mel": (32, 32, 1), "mfcc": (20, 13), "musicnn": (187, 96), "melspec": (40, 64), "tempogram": (32, 128)}


def _tiny_model(name: str):
    spec = get_arch(name)
    if name == "fusion":  # built on a trained genre model: a tiny one stands in
        genre = build_model("cnn64x400", TINY["melspec"], 3)
        return build_model("fusion", genre, 3), [TINY["melspec"], (1,)]
    kw = {"weights": None} if spec.is_transfer else {}
    if spec.task == "tempo":
        kw = {"bpm_min": 30.0, "bpm_max": 480.0}
    shape = TINY[spec.feature]
    model = build_model(name, shape, 1 if spec.task == "tempo" else 3, **kw)
    if spec.head == "logreg":  # a track model: its input is each track's windows
        shape = (2, *shape)
    return model, [shape]


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_builder_has_the_layers_its_spec_declares(name):
    spec = get_arch(name)
    model, shapes = _tiny_model(name)
    names = {layer.name for layer in model.layers}
    missing = [n for n in spec.layers if n not in names]
    assert not missing, f"{name} declares {missing} but its model has no such layer"
    rng = np.random.default_rng(0)
    xs = [rng.random((2, *s)).astype("float32") for s in shapes]
    out = np.asarray(model(xs if len(xs) > 1 else xs[0]))
    if spec.task == "tempo":
        assert out.shape == (2, 1) and np.all((out >= 0) & (out <= 1))
    else:
        assert out.shape == (2, 3)
        np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_a_missing_declared_layer_is_seen(monkeypatch):
    """The check above can fail: a spec that declares a layer its model lacks."""
    spec = get_arch("cnn")
    monkeypatch.setitem(REGISTRY, "cnn", registry.ArchSpec(**{**spec.__dict__, "layers": ("no_such_layer",)}))
    with pytest.raises(AssertionError, match="no_such_layer"):
        test_every_builder_has_the_layers_its_spec_declares("cnn")


def _layer_names_used_by_genrekit() -> set[str]:
    """String literals passed to ``get_layer``/``find_layer`` in genrekit's top layer."""
    used = set()
    for path in sorted((ROOT / "genrekit").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                    "get_layer", "find_layer"):
                used |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return used


def test_every_layer_name_genrekit_looks_up_is_declared():
    declared = set().union(*(s.layers for s in REGISTRY.values()))
    used = _layer_names_used_by_genrekit()
    assert used, "found no layer look-ups at all: the scan is broken"
    assert used <= declared, f"looked up but declared by no architecture: {sorted(used - declared)}"


def test_the_transfer_modules_names_are_the_registrys():
    from genrekit.models import transfer

    assert transfer.BASE_NAME == registry.BASE
    assert transfer.HEAD_LAYERS[0] == registry.HEAD_FLATTEN  # split_at_base cuts at its input
    for name, spec in REGISTRY.items():
        if "transfer" in spec.phases and spec.head == "keras":  # the cached-base path needs both
            assert {registry.BASE, registry.HEAD_FLATTEN} <= set(spec.layers), name


def test_every_architectures_feature_kind_is_registered():
    """A spec's input kind is one of data_tools' feature kinds (fusion reads a genre run's)."""
    from genrekit.data_tools.features import KINDS

    for name, spec in REGISTRY.items():
        if name != "fusion":
            assert spec.feature in KINDS, f"{name} reads {spec.feature!r}, not a registered feature kind"
            assert spec.feature in TINY


def test_builders_are_plain_functions():
    for spec in REGISTRY.values():
        assert callable(spec.builder) and spec.builder.__module__.startswith("genrekit.models."), spec.name
        assert spec.builder.__name__.startswith("build_"), spec.name
    assert "_lazy" not in (ROOT / "models" / "registry.py").read_text(encoding="utf-8")


def test_importing_the_registry_does_not_load_tensorflow():
    code = ("import sys, genrekit.models.registry as r, genrekit.models\n"
            "assert r.REGISTRY and r.arch_help() and r.hparam_defaults('vgg16')\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_tensorflow_check_can_fail():
    """The same subprocess check sees a module that does load Keras."""
    code = ("import sys, genrekit.models.track_layers\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "keras" in out.stdout


def test_help_and_names_come_from_the_registry():
    text = registry.arch_help()
    for name in REGISTRY:
        assert name in text
    assert registry.arch_names() == list(REGISTRY)
    assert registry.arch_names("tempo") == ["tempocnn"]
    assert registry.DEFAULT_ARCH in REGISTRY


def test_hyper_parameters_of_forwarding_builders():
    """vgg16/mobilenet forward to build_transfer: its keyword parameters are theirs."""
    assert registry.hparam_defaults("vgg16")["dense_units"] == 64
    assert "embedding" in registry.hparam_defaults("musicnn")
    with pytest.raises(ModelError, match="no hyper-parameter 'units'"):
        registry.check_hparams("mobilenet", {"units": 3})


def test_fusion_builds_through_the_registry_on_a_named_embedding():
    genre = build_model("cnn64x400", TINY["melspec"], 3)
    fused = build_model("fusion", genre, 3, embedding_layer="flatten", tempo_units=[4])
    assert fused.get_layer("fusion_concat").input[0] is genre.get_layer("flatten").output
    with pytest.raises(ModelError, match="no layer 'nope'"):
        build_model("fusion", build_model("cnn64x400", TINY["melspec"], 3), 3, embedding_layer="nope")


def _arch_action(command: str):
    from genrekit.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return next(a for a in sub.choices[command]._actions if a.dest == "arch")


def test_the_clis_arch_choices_and_help_come_from_the_registry():
    train = _arch_action("train")
    assert list(train.choices) == list(REGISTRY)
    for name in REGISTRY:
        assert name in train.help
    cv = _arch_action("cv")
    assert set(cv.choices) == {n for n, s in REGISTRY.items() if s.task == "genre" and n != "fusion"}


def test_the_cli_refuses_an_unknown_architecture_in_one_line(tmp_path, capsys):
    from genrekit.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path), "--arch", "alexnet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "unknown architecture 'alexnet'" in err
    with pytest.raises(SystemExit):
        main(["cv", "--data", str(tmp_path), "--arch", "tempocnn"])
    assert "tempocnn is not one" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arch, hp, choices", [
    ("cnn_bn", {"pooling": "x"}, "gap, flatten"),  # was built as "flatten", silently
    ("musicnn_lr", {"embedding": "last"}, "penultimate, pooled, taggram"),
    ("vgg16", {"preprocess": "imagenet"}, "tf, caffe, torch"),
])
def test_a_text_hyper_parameter_outside_its_choices_is_refused_with_them(arch, hp, choices):
    with pytest.raises(ModelError, match=f"choose from {choices}"):
        registry.check_hparams(arch, hp)
    registry.check_hparams(arch, {k: choices.split(", ")[0] for k in hp})  # an allowed value passes
