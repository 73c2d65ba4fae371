"""genrekit augment on hostile input (issue 13): a user's files are never deleted, one file's
failure is a reported skip, one file's cost is bounded, a dead worker is reported, resume
notices replaced audio, refused options create nothing, a kill -9 resumes to the same bytes."""
import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genrekit.cli import main
from genrekit.data_tools.beam_runner import remove_stale_results
from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import pid_alive
from genrekit.data_tools.fsio import remove_stale_temporaries as fsio_remove_stale
from genrekit.data_tools.manifest import read_manifest
from genrekit.data_tools.pipeline import run_augment
from genrekit.data_tools.spotify import remove_stale_temporaries as spotify_remove_stale
from genrekit.runs import remove_stale_temporaries as runs_remove_stale
from tests.conftest import SR, small_settings, tone, write_tree

REPO = Path(__file__).resolve().parents[1]


def _hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrekit: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def test_only_genrekits_own_temporaries_are_cleaned(audio_tree, tmp_path):
    out = tmp_path / "f"
    run_augment(audio_tree, out, small_settings(), progress=False)
    users = [out / "docs" / "thesis.tmp-v2.docx", out / "notes.tmp-1", out / "mel" / "low" / "mine.tmp-2.png",
             out / "docs" / ".draft.12.genrekit-tmp"]  # genrekit's pattern, but not in a folder it writes
    for p in users:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"precious")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    ours = out / "mfcc" / "low" / f".low.00000.original.000.npy.{dead}.genrekit-tmp"
    ours.write_bytes(b"half")
    # a concurrent shard's write in flight (its process is alive) is left alone
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        in_flight = out / "mel" / "low" / f".low.00003.original.000.png.{sleeper.pid}.genrekit-tmp"
        in_flight.write_bytes(b"being written")
        run_augment(audio_tree, out, small_settings(), progress=False)
        assert in_flight.read_bytes() == b"being written"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert all(p.read_bytes() == b"precious" for p in users)
    assert not ours.exists()


def test_own_pid_is_alive_and_a_dead_pid_is_not(tmp_path):
    """The one liveness check every temporary-name scheme's cleanup uses: this process's own
    temporaries are in flight (never removed), a dead process's are stale."""
    p = subprocess.Popen(["true"])
    p.wait()
    dead, me = p.pid, os.getpid()
    assert pid_alive(me) and not pid_alive(dead)
    (tmp_path / ".state").mkdir()
    (tmp_path / ".genrekit-tmp").mkdir()
    names = [".pk.csv.{}.genrekit-tmp", ".genrekit-tmp-{}-model.keras", ".genrekit-tmp/t1.{}.genrekit-part",
             ".state/beam-{}"]
    for name in names:
        for pid in (dead, me):
            f = tmp_path / name.format(pid)
            f.mkdir() if "beam" in name else f.write_text("x")
    assert (fsio_remove_stale(tmp_path) == 1 and runs_remove_stale(tmp_path) == 1
            and spotify_remove_stale(tmp_path) == 1)
    remove_stale_results(tmp_path)
    assert all((tmp_path / n.format(me)).exists() and not (tmp_path / n.format(dead)).exists() for n in names)


def test_non_finite_features_are_a_reported_skip(audio_tree, tmp_path):
    sf.write(audio_tree / "low" / "huge.wav", np.full(SR * 2, 1e30, dtype=np.float32), SR, subtype="FLOAT")
    out = tmp_path / "f"
    msgs = []
    s = run_augment(audio_tree, out, small_settings(), progress=False, log=msgs.append)
    assert s.ok == 15 and s.skipped_bad == 1
    assert any("low/huge" in m and "infinite" in m for m in msgs)
    assert not any(r["track_id"] == "low/huge" for r in read_manifest(out))
    assert not list(out.rglob("huge*"))
    for p in (out / "mfcc").rglob("*.npy"):
        assert np.all(np.isfinite(np.load(p)))


def test_check_features_refuses_nan_and_all_constant():
    from genrekit.data_tools.errors import FeatureError
    from genrekit.data_tools.features import check_features

    ok = np.arange(12, dtype=np.float32).reshape(3, 4)
    check_features("mfcc", [ok, np.zeros((3, 4), np.float32)])  # one silent segment among others is fine
    with pytest.raises(FeatureError, match="infinite"):
        check_features("mfcc", [ok, np.full((3, 4), np.nan, np.float32)])
    with pytest.raises(FeatureError, match="constant"):
        check_features("mel", [np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)])


def _wav_header(sr: int, n_bytes: int, bits: int = 16) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, sr, sr * bits // 8, bits // 8, bits)
    return (b"RIFF" + struct.pack("<I", 36 + n_bytes) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", n_bytes))


def test_long_and_absurd_files_are_refused_before_decoding(audio_tree, tmp_path, monkeypatch):
    # ten hours at 8 kHz (a sparse file: the header is true, the samples are zeros never read)
    n = 10 * 3600 * SR * 2
    with open(audio_tree / "mid" / "ten_hours.wav", "wb") as fh:
        fh.write(_wav_header(SR, n))
        fh.truncate(44 + n)
    # a 400 kB WAV whose header says 1 Hz: 200,000 s, resampling would ask 17.6 GB
    (audio_tree / "high" / "one_hz.wav").write_bytes(_wav_header(1, 400_000) + bytes(400_000))
    sf.write(audio_tree / "low" / "five_s.wav", tone(300, 5.0), SR)  # longer than --max-seconds 4
    read = sf.SoundFile.read

    def guarded_read(self, *a, **kw):
        assert "ten_hours" not in self.name and "one_hz" not in self.name, "decoded a refused file"
        return read(self, *a, **kw)

    monkeypatch.setattr(sf.SoundFile, "read", guarded_read)
    out = tmp_path / "f"
    msgs = []
    s = run_augment(audio_tree, out, small_settings(max_seconds=4.0), progress=False, log=msgs.append)
    assert s.ok == 15 and s.skipped_bad == 3
    report = (out / "report.md").read_text()
    assert "`mid/ten_hours`: long: 36000 s long" in report
    assert "`low/five_s`: long" in report
    assert "`high/one_hz`: bad: header says 1 Hz" in report


def test_random_bytes_named_mp3_get_a_clear_reason(audio_tree, tmp_path):
    (audio_tree / "low" / "noise.mp3").write_bytes(np.random.default_rng(0).bytes(20000))
    out = tmp_path / "f"
    run_augment(audio_tree, out, small_settings(), progress=False)
    report = (out / "report.md").read_text()
    assert "`low/noise`: bad: not a recognised audio format" in report and "pipe" not in report


def test_one_files_failure_is_a_skip_not_an_abort(audio_tree, tmp_path, monkeypatch):
    import genrekit.data_tools.pipeline as pipeline

    real = pipeline.load_audio

    def flaky(path, *a, **kw):
        if Path(path).name == "low.00001.wav":
            raise MemoryError
        if Path(path).name == "mid.00002.wav":
            raise RuntimeError("a library bug")
        return real(path, *a, **kw)

    monkeypatch.setattr(pipeline, "load_audio", flaky)
    msgs = []
    s = run_augment(audio_tree, tmp_path / "f", small_settings(), progress=False, log=msgs.append)
    assert s.ok == 13 and s.skipped_bad == 2
    assert any("low/low.00001" in m and "out of memory" in m for m in msgs)
    assert any("mid/mid.00002" in m and "RuntimeError: a library bug" in m for m in msgs)


def _die_on_mid(job):
    """A worker that the system kills (as the OOM killer would) on one track."""
    import genrekit.data_tools.pipeline as pipeline

    if job[0].track_id == "mid/mid.00003":
        os.kill(os.getpid(), signal.SIGKILL)
    return pipeline.__dict__["_real_process_track"](job)


def test_a_killed_worker_is_reported_not_waited_on(audio_tree, tmp_path, monkeypatch, capsys):
    import genrekit.data_tools.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_real_process_track", pipeline.process_track, raising=False)
    monkeypatch.setattr(pipeline, "process_track", _die_on_mid)
    with pytest.raises(DataError, match="worker process died"):
        run_augment(audio_tree, tmp_path / "f", small_settings(), workers=2, progress=False)
    assert main(["augment", "--data", str(audio_tree), "--out", str(tmp_path / "g"), "--workers", "2",
                 "--quiet"]) == 2
    assert "worker process died" in _one_error_line(capsys)
    monkeypatch.undo()  # a rerun resumes and completes
    s = run_augment(audio_tree, tmp_path / "f", small_settings(), workers=2, progress=False)
    assert s.ok == 15


def test_resume_redoes_a_track_whose_audio_was_replaced(audio_tree, tmp_path):
    out = tmp_path / "f"
    from genrekit.data_tools.augment import AugmentConfig

    settings = small_settings(augment=AugmentConfig(augmentations=()))
    run_augment(audio_tree, out, settings, progress=False)
    before = _hashes(out)
    victim = audio_tree / "low" / "low.00002.wav"
    sf.write(victim, tone(900, 1.5, seed=7), SR)  # new audio, shorter: fewer MFCC segments
    os.utime(victim, ns=(1_000_000_000, 1_000_000_000))
    s = run_augment(audio_tree, out, settings, progress=False)
    assert s.resumed == 14
    after = _hashes(out)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all("low.00002" in k or k in ("manifest.csv", "report.md") for k in changed)
    assert any(k not in after for k in changed)  # the old track's extra segments are gone
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".png", ".npy")}
    assert on_disk == {r["path"] for r in read_manifest(out)}
    # the file becomes undecodable: its old features leave the folder and the manifest
    victim.write_bytes(b"not audio")
    s = run_augment(audio_tree, out, settings, progress=False)
    assert s.skipped_bad == 1 and not list(out.rglob("low.00002*"))


def test_a_track_listed_for_two_splits_is_refused(audio_tree, tmp_path, capsys):
    split = tmp_path / "split.csv"
    lines = ["track_id,split"] + [f"{g}/{g}.{i:05d},train" for g in ("low", "high", "mid") for i in range(5)]
    split.write_text("\n".join(lines + ["low/low.00000,test"]) + "\n")
    out = tmp_path / "f"
    assert main(["augment", "--data", str(audio_tree), "--out", str(out), "--split", str(split)]) == 2
    line = _one_error_line(capsys)
    assert "low/low.00000 is listed twice, for train and for test" in line
    assert not out.exists()
    split.write_text("\n".join(lines + ["low/low.00000,train"]) + "\n")  # a repeated, agreeing line is fine
    run_augment(audio_tree, out, small_settings(split=str(split)), progress=False)


@pytest.mark.parametrize("args, words", [
    (["--pitch-semitones", "1000"], "pitch shift(s) 1000 out of range"),
    (["--stretch-rates", "0"], "time-stretch rate(s) 0 out of range"),
    (["--hop-length", "1"], "would need 8.2 GiB"),
    (["--mfcc-seconds", "1e7"], "mfcc_seconds 1e+07 is above 600 s"),
    (["--ratios=-1/2/3"], "bad --ratios '-1/2/3'"),
    (["--max-seconds", "0"], "--max-seconds must be"),
    (["--genres", "polka"], "unknown genre(s) polka"),
    (["--features", "melspec", "--max-seconds", "86400"], "one clip's melspec features would need"),
])
def test_refused_options_create_nothing(audio_tree, tmp_path, capsys, args, words):
    out = tmp_path / "new" / "feats"
    assert main(["augment", "--data", str(audio_tree), "--out", str(out), "--quiet", *args]) == 2
    assert words in _one_error_line(capsys)
    assert not (tmp_path / "new").exists()


def _record_blas_threads(y, *a, **kw):
    from threadpoolctl import threadpool_info

    import genrekit.data_tools.pipeline as pipeline

    n = max([i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] or [1])
    with open(os.environ["GENREKIT_TEST_BLAS_LOG"], "a") as fh:
        fh.write(f"{n}\n")
    return pipeline.__dict__["_real_extract"](y, *a, **kw)


@pytest.mark.parametrize("workers", [1, 2])
def test_features_are_computed_on_one_blas_thread(audio_tree, tmp_path, monkeypatch, workers):
    """Multi-threaded BLAS sums differ in the last bit: every path must use one thread so that the
    same seed gives the same bytes whatever --workers (the byte comparison itself is in
    test_augment_pipeline.test_same_seed_same_bytes_whatever_the_workers)."""
    import genrekit.data_tools.pipeline as pipeline

    log = tmp_path / "blas.log"
    monkeypatch.setenv("GENREKIT_TEST_BLAS_LOG", str(log))
    monkeypatch.setattr(pipeline, "_real_extract", pipeline.extract, raising=False)
    monkeypatch.setattr(pipeline, "extract", _record_blas_threads)
    run_augment(audio_tree, tmp_path / "f", small_settings(), workers=workers, progress=False)
    counts = log.read_text().split()
    assert len(counts) > 15 and set(counts) == {"1"}


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_same_bytes(tmp_path):
    data = write_tree(tmp_path / "data", per_genre=6, seconds=4.0)
    args = ["augment", "--data", str(data), "--quiet", "--seed", "5", "--sr", str(SR), "--n-fft", "256",
            "--hop-length", "128", "--n-mels", "32", "--image-size", "32x48", "--image-seconds", "2",
            "--mfcc-seconds", "1", "--mfcc-hop", "0.5", "--freq-mask", "8", "--time-mask", "10"]
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env = dict(os.environ, TMPDIR=str(systmp), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=str(REPO))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "genrekit", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60000):  # a safety net against a hung child, not a timing assertion
            if proc.poll() is not None or len(list((killed / ".state").rglob("*.json"))) >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "augment finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (killed / "manifest.csv").exists()  # it really died mid-way
    full = tmp_path / "full"
    for out in (killed, full):
        r = subprocess.run([sys.executable, "-m", "genrekit", *args, "--out", str(out)], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    assert _hashes(killed) == _hashes(full)
    assert len(read_manifest(full)) > 100
    assert not [p for p in killed.rglob("*") if "genrekit-tmp" in p.name]
    assert not list(systmp.iterdir())


# -- issue 27: a user's folder is never written into, nor anything through a planted link -------

def _tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): sha256 of each file, the target of each link."""
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                snap[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                snap[rel] = "dir"
    return snap


def _user_folder_a07(out: Path) -> None:
    out.mkdir()
    (out / "report.md").write_text("# my thesis notes\n")


def _user_folder_a05(out: Path) -> None:
    (out / "mel" / "low").mkdir(parents=True)
    (out / "report.md").write_text("# mine\n")
    (out / "manifest.csv").write_text("path,track_id\nmine.png,x\n")
    (out / "feature_config.json").write_text("{}\n")
    (out / "mel" / "low" / "low.00000.original.000.png").write_bytes(b"my own image")
    np.save(out / "mel" / "low" / "low.00001.original.000.npy", np.arange(3))


@pytest.mark.parametrize("make", [_user_folder_a07, _user_folder_a05])
def test_augment_refuses_a_folder_it_did_not_make(tmp_path, capsys, make):
    data = write_tree(tmp_path / "data", per_genre=2, seconds=1.5)
    out = tmp_path / "mine"
    make(out)
    before = _tree(tmp_path)
    assert main(["augment", "--data", str(data), "--out", str(out), "--quiet", "--augment", "none"]) == 2
    line = _one_error_line(capsys)
    assert "did not make (no augment_config.json)" in line and str(out) in line
    assert _tree(tmp_path) == before


def test_augment_resumes_its_own_folder_and_one_emptied(tmp_path):
    from genrekit.data_tools.augment import AugmentConfig

    data = write_tree(tmp_path / "data", per_genre=2, seconds=1.5)
    settings = small_settings(augment=AugmentConfig(augmentations=()))
    (tmp_path / "empty").mkdir()
    run_augment(data, tmp_path / "empty", settings, progress=False)
    s = run_augment(data, tmp_path / "empty", settings, progress=False)
    assert s.resumed == 6 and s.ok == 6


def _plant(out: Path, rel: str, target: Path) -> None:
    import shutil

    p = out / rel
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, p.parent), p)


@pytest.mark.parametrize("rel", ["mfcc", ".state", "mel/low", "manifest.csv"])
def test_augment_never_writes_through_a_link_planted_in_its_folder(tmp_path, capsys, rel):
    data = write_tree(tmp_path / "data", per_genre=2, seconds=1.5)
    out = tmp_path / "o"
    args = ["augment", "--data", str(data), "--out", str(out), "--quiet", "--augment", "none", "--sr", str(SR),
            "--n-fft", "256", "--hop-length", "128", "--n-mels", "32", "--image-size", "32x48",
            "--image-seconds", "1", "--mfcc-seconds", "1", "--features", "mel,mfcc"]
    assert main(args) == 0
    capsys.readouterr()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    _plant(out, rel, victim / "keep.txt" if rel.endswith(".csv") else victim)
    before = _tree(tmp_path)
    assert main(args) == 2
    line = _one_error_line(capsys)
    assert "symbolic link" in line and str(out / rel) in line, line
    assert _tree(tmp_path) == before


def test_augment_refuses_to_replace_a_read_only_output(tmp_path, capsys):
    data = write_tree(tmp_path / "data", per_genre=2, seconds=1.5)
    out = tmp_path / "o"
    args = ["augment", "--data", str(data), "--out", str(out), "--quiet", "--augment", "none", "--sr", str(SR),
            "--n-fft", "256", "--hop-length", "128", "--n-mels", "32", "--image-size", "32x48", "--features", "mfcc"]
    assert main(args) == 0
    (out / "report.md").write_text("# edited and protected\n")
    (out / "report.md").chmod(0o444)
    capsys.readouterr()
    before = _tree(tmp_path)
    assert main(args) == 2
    assert "report.md is read-only" in _one_error_line(capsys)
    assert _tree(tmp_path) == before


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def _running(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_kill_9_of_augment_leaves_no_worker_alive(tmp_path):
    """Issue 27 item 9: the workers of a killed `augment --workers 2` end with it."""
    data = write_tree(tmp_path / "data", per_genre=8, seconds=4.0)
    out = tmp_path / "o"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "genrekit", "augment", "--data", str(data), "--out", str(out),
                             "--quiet", "--workers", "2", "--sr", str(SR), "--n-fft", "256", "--hop-length", "128",
                             "--n-mels", "32", "--image-size", "32x48"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        for _ in range(60000):  # a safety net against a hung child, not a timing assertion
            if proc.poll() is not None:
                break
            workers = _children(proc.pid)
            if len(workers) >= 2 and len(list((out / ".state").rglob("*.json"))) >= 1:
                break
            time.sleep(0.01)
        assert proc.poll() is None and len(workers) >= 2, "augment finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    for _ in range(3000):
        if not any(_running(w) for w in workers):
            break
        time.sleep(0.01)
    alive = [w for w in workers if _running(w)]
    for w in alive:  # never leave them running, even when the test fails
        os.kill(w, signal.SIGKILL)
    assert not alive, f"worker(s) {alive} outlived their killed parent"
