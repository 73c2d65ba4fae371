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
