"""The CLI's error paths: one line on stderr, exit code 2, no traceback."""
import subprocess
import sys

import pytest

from genrekit.cli import main
from tests.conftest import write_tree


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "genrekit", *args], capture_output=True, text=True,
                          timeout=300)


def _one_line_error(proc, needle):
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0, err
    assert err.startswith("genrekit: error:") and needle in err, err


def test_missing_folder(tmp_path):
    _one_line_error(run_cli("augment", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")),
                    "not found")


def test_folder_without_audio(tmp_path):
    (tmp_path / "d" / "g").mkdir(parents=True)
    _one_line_error(run_cli("augment", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")),
                    "no audio")


def test_unknown_augmentation(tmp_path):
    write_tree(tmp_path / "d", per_genre=2, seconds=0.5)
    _one_line_error(run_cli("augment", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                            "--augment", "reverse"), "unknown augmentation")


def test_split_file_with_unknown_genre(tmp_path):
    write_tree(tmp_path / "d", per_genre=2, seconds=0.5)
    (tmp_path / "s.csv").write_text("track_id,split\npolka/p1,train\n")
    _one_line_error(run_cli("augment", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                            "--split", str(tmp_path / "s.csv")), "polka")


def test_unwritable_output(tmp_path):
    write_tree(tmp_path / "d", per_genre=2, seconds=0.5)
    (tmp_path / "file").write_text("x")
    _one_line_error(run_cli("augment", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "file" / "o")),
                    "cannot write")


def test_bad_option_value(tmp_path):
    _one_line_error(run_cli("augment", "--data", "x", "--out", "y", "--shard", "5/2"), "shard")


def test_augment_cli_end_to_end(tmp_path, capsys):
    write_tree(tmp_path / "d", per_genre=3, seconds=2.5)
    rc = main(["augment", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--quiet",
               "--sr", "8000", "--n-fft", "256", "--hop-length", "128", "--n-mels", "32",
               "--image-size", "32x32", "--image-seconds", "2", "--mfcc-seconds", "1",
               "--augment", "pitch", "--pitch-semitones", "3", "--workers", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "9 tracks" in out
    assert (tmp_path / "o" / "manifest.csv").is_file()


@pytest.mark.parametrize("argv", [[], ["--version"]])
def test_help_and_version(argv):
    proc = run_cli(*argv)
    assert proc.returncode in (0, 2)
    assert "genrekit" in (proc.stdout + proc.stderr)


@pytest.mark.parametrize("fails", [False, True])
def test_tensorflow_start_up_log_is_kept_off_stderr(tmp_path, fails):
    """A stand-in `tensorflow` package writes to file descriptor 2 while it loads, as the real
    one's C++ libraries do: the CLI's import hides it, unless the import fails."""
    import os

    pkg = tmp_path / "tensorflow"
    pkg.mkdir()
    body = "import os\nos.write(2, b'I0000 port.cc:153] oneDNN custom operations are on\\n')\n"
    if fails:
        body += "raise ImportError('broken tensorflow')\n"
    (pkg / "__init__.py").write_text(body)
    code = ("import sys\nfrom genrekit.cli import quiet_libraries\nquiet_libraries()\n"
            "try:\n    import tensorflow\nexcept ImportError as e:\n    print('import failed:', e)\n"
            "print('stderr still works', file=sys.stderr)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    env.pop("GENREKIT_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert "stderr still works" in proc.stderr
    if fails:
        assert "oneDNN" in proc.stderr and "import failed: broken tensorflow" in proc.stdout
    else:
        assert "oneDNN" not in proc.stderr and proc.stderr.strip() == "stderr still works"


# -- the commands and their options (genrekit/commands, genrekit/options) -------------------------

def _subparser(*path):
    import argparse

    from genrekit.cli import build_parser

    p = build_parser()
    for name in path:
        p = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return p


def test_every_command_is_a_module_with_a_parser_and_a_run():
    from genrekit.commands import COMMANDS

    sub = next(a for a in _subparser()._actions if a.dest == "command")
    assert len(sub.choices) == len(COMMANDS) >= 17
    for name, parser in sub.choices.items():
        module = parser.get_default("func").__module__
        assert module == "genrekit.commands." + name.replace("-", "_"), (name, module)


def test_train_builds_its_options_from_the_dataclass_fields():
    from genrekit.models.registry import default_arch
    from genrekit.options import from_args
    from genrekit.training import TrainOptions

    a = _subparser("train").parse_args(["--data", "d"])
    assert from_args(TrainOptions, a, arch=default_arch(a.task)) == TrainOptions(data="d", arch=default_arch())
    a = _subparser("train").parse_args([
        "--data", "d", "--task", "tempo", "--from", "r", "--no-cache-base", "--hparam", "dropout=0.5",
        "--hparam", "units=[8,16]", "--image-aug", "crop,erase", "--no-xla", "--label-smoothing", "0.1",
        "--epochs", "3", "--lr", "0.01", "--deterministic", "--mixed-precision", "--out", "o"])
    assert from_args(TrainOptions, a, arch="tempocnn", verbose=0) == TrainOptions(
        data="d", arch="tempocnn", task="tempo", from_run="r", cache_base=False,
        hparams={"dropout": 0.5, "units": [8, 16]}, image_aug=("crop", "erase"), xla=False,
        label_smoothing=0.1, epochs=3, lr=0.01, deterministic=True, mixed_precision=True, out="o", verbose=0)


def test_train_and_cv_share_one_definition_of_the_training_options():
    from genrekit.commands.cv import SHARED, train_kwargs

    def actions(parser):
        return {a.dest: a for a in parser._actions}

    train, cv = actions(_subparser("train")), actions(_subparser("cv"))
    for name in SHARED:
        t, c = train[name], cv[name]
        assert (t.option_strings, t.default, t.type, t.choices, t.required) == (
            c.option_strings, c.default, c.type, c.choices, c.required), name
        assert name in ("phase", "epochs") or t.help == c.help, name  # cv trains no tempo or fusion run
    a = _subparser("cv").parse_args(["--data", "d"])
    assert train_kwargs(a) == {"epochs": None, "batch_size": 32, "patience": 10, "weights": None, "hparams": {},
                               "label_smoothing": 0.0, "mixup": 0.0, "image_aug": (), "deterministic": False}
    a = _subparser("cv").parse_args(["--data", "d", "--phase", "transfer", "--hparam", "C=2", "--seed", "3"])
    assert train_kwargs(a)["phase"] == "transfer" and train_kwargs(a)["hparams"] == {"C": 2} and a.seed == 3


def test_the_generated_help_shows_the_dataclass_defaults():
    text = _subparser("train").format_help()
    for want in ("early-stopping patience on val loss (default 10)", "label smoothing e (default 0)",
                 "(default 0: off)", "adam | rmsprop | sgd (default adam)", "--no-cache-base", "--from FROM_RUN",
                 "--xla, --no-xla", "--task {genre,tempo}", "--hparam KEY=VALUE"):
        assert want in " ".join(text.split()), want


def test_a_bad_hparam_is_still_one_line_before_any_work(tmp_path):
    _one_line_error(run_cli("train", "--data", str(tmp_path), "--hparam", "dropout"), "bad --hparam 'dropout'")
