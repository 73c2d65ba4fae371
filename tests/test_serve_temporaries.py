"""The upload folders a killed ``genrekit serve`` leaves in the system temp folder go with the next
server's start, by the one stale-temporary rule (fsio's: the pid in the name, checked with
``pid_alive``): a live server's folder, this process's own, a link, a file and another name stay."""
import os
import subprocess
import tempfile

from genrekit import serve


def test_stale_upload_folders_of_dead_servers_only(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    p = subprocess.Popen(["true"])
    p.wait()
    dead, me = p.pid, os.getpid()
    pre = serve.TMP_PREFIX
    gone = [tmp_path / f"{pre}{dead}-abc123", tmp_path / f"{pre}{dead}-x-y"]
    for d in gone:
        d.mkdir()
        (d / "upload-1.wav").write_bytes(b"RIFF")
    target = tmp_path / "elsewhere"
    target.mkdir()
    kept = [tmp_path / f"{pre}{me}-alive", tmp_path / f"{pre}{dead}x-notapid",
            tmp_path / f"{pre}{dead}", tmp_path / "genrekit-serve-notes"]
    for d in kept:
        d.mkdir()
    link = tmp_path / f"{pre}{dead}-link"
    link.symlink_to(target, target_is_directory=True)
    plain = tmp_path / f"{pre}{dead}-file"
    plain.write_text("a file")
    assert serve.remove_stale_upload_folders() == 2
    assert not any(d.exists() for d in gone)
    assert all(d.is_dir() for d in kept)
    assert link.is_symlink() and target.is_dir() and plain.is_file()
    assert serve.remove_stale_upload_folders() == 0
