"""`augment --runner beam`: the same per-track function on Apache Beam's local runner gives the
same bytes as `--workers N`; bad Beam options are refused before --out exists. Skipped when
apache_beam is not installed (pip install 'genrekit[beam]')."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.pipeline import run_augment
from tests.conftest import small_settings, write_tree

beam = pytest.importorskip("apache_beam")


def _hashes(folder: Path) -> dict[str, str]:
    # every file, state and report included
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def small_tree(tmp_path) -> Path:
    return write_tree(tmp_path / "data", per_genre=2, seconds=2.5)


@pytest.mark.slow
def test_beam_direct_runner_gives_the_bytes_of_local_workers(small_tree, tmp_path):
    settings = small_settings(ratios=(50, 25, 25))
    a = run_augment(small_tree, tmp_path / "local", settings, workers=2, progress=False)
    b = run_augment(small_tree, tmp_path / "beam", settings, workers=2, progress=False, runner="beam",
                    beam_options=["direct_num_workers=2", "direct_running_mode=multi_processing"])
    assert a.ok == b.ok >= 4 and a.files == b.files > 20
    ha, hb = _hashes(tmp_path / "local"), _hashes(tmp_path / "beam")
    # the report names the data root (the same here); the launcher's result files are gone
    assert ha == hb
    assert not any(p.name.startswith("beam-") for p in (tmp_path / "beam" / ".state").iterdir())
    # a rerun on Beam resumes: every track already finished, same manifest
    c = run_augment(small_tree, tmp_path / "beam", settings, workers=1, progress=False, runner="beam")
    assert c.resumed == c.tracks == b.tracks and _hashes(tmp_path / "beam") == hb


def test_bad_beam_options_create_nothing(small_tree, tmp_path):
    out = tmp_path / "never"
    for opts in (["no_such_option=1"], ["direct_running_mode=sideways"], ["=3"]):
        with pytest.raises(DataError):
            run_augment(small_tree, out, small_settings(), progress=False, runner="beam", beam_options=opts)
    with pytest.raises(DataError, match="needs --runner beam"):
        run_augment(small_tree, out, small_settings(), progress=False, beam_options=["direct_num_workers=2"])
    assert not out.exists()


def test_cli_beam_option_refusal_is_one_line(small_tree, tmp_path):
    out = tmp_path / "cli"
    r = subprocess.run([sys.executable, "-m", "genrekit", "augment", "--data", str(small_tree), "--out", str(out),
                        "--runner", "beam", "--beam-option", "no_such_option=1", "--quiet"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("genrekit: error: unknown Beam pipeline option"), r.stderr
    assert not out.exists()
