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
