"""``genrekit weights fetch musicnn``: get the musicnn checkpoints the way a user would.

The PyPI package ``musicnn`` 0.1.0 (ISC licence) ships four TF1 checkpoints in its wheel;
the package itself does not install on Python 3.11, so genrekit downloads the wheel with
``pip download --no-deps``, unpacks the checkpoints into a cache folder
(``$GENREKIT_CACHE`` or ``~/.cache/genrekit``, ``musicnn/``) and verifies their SHA-256.
``--from`` takes a wheel file or a folder for offline installs.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from genrekit.errors import UserError

MUSICNN_WHEEL = "musicnn==0.1.0"
MUSICNN_FILES = {  # path inside the cache folder -> SHA-256 (of the files in the 0.1.0 wheel)
    "MSD_musicnn/.index": "87f3e0f3550c8d3bafc840374003e5c8af5eeb5ecf6add61af09a7822d3282c8",
    "MSD_musicnn/.data-00000-of-00001": "8579734ee6388f799ed0def4bbd0d1fdcbeaf213ef2a9dc860917bd76a303de6",
    "MTT_musicnn/.index": "da2d7bb670b2b31e9bc441bb1bd75eca31b5b061f963cc1f9630c1aff3238f57",
    "MTT_musicnn/.data-00000-of-00001": "041f3935e981a65cea739842d30c188d3a7d2adf4410955c8668eb3de4a5acab",
    "MSD_vgg/.index": "50e499238457558bba9f34f8b84d4afb8279afd43520cdf0a4fdf805a49c9ca3",
    "MSD_vgg/.data-00000-of-00001": "9683d756b8311146534f333502ebf4a2a78a3e320c54ab0411dff6186d8375fc",
    "MTT_vgg/.index": "4b0d3d2d02bbe0919c063c1fb74bfa9018ac3517e362d681b07444d4207a5f5f",
    "MTT_vgg/.data-00000-of-00001": "458f5c8bcecc086a3bba3dce83809df6da6e0a3560a59ddd84711bf3d5fd8303",
}


def cache_root() -> Path:
    """Where genrekit keeps fetched weights: ``$GENREKIT_CACHE``, else ``~/.cache/genrekit``."""
    return Path(os.environ.get("GENREKIT_CACHE") or Path.home() / ".cache" / "genrekit")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_from_wheel(wheel: Path) -> dict[str, bytes]:
    try:
        z = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UserError(f"{wheel} is not a readable wheel: {exc}") from None
    with z:
        names = set(z.namelist())
        out = {}
        for rel in MUSICNN_FILES:
            member = f"musicnn/{rel}"
            if member not in names:
                raise UserError(f"{wheel} has no {member}: is it the musicnn 0.1.0 wheel?")
            out[rel] = z.read(member)
    return out


def _read_from_folder(folder: Path) -> dict[str, bytes]:
    base = folder / "musicnn" if (folder / "musicnn" / "MSD_musicnn").is_dir() else folder
    out = {}
    for rel in MUSICNN_FILES:
        p = base / rel
        if not p.is_file():
            raise UserError(f"{folder} has no {rel} (expected the musicnn checkpoint folders MSD_musicnn/, ...)")
        out[rel] = p.read_bytes()
    return out


def _download_wheel(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(tmp), MUSICNN_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(tmp.glob("musicnn-*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not download {MUSICNN_WHEEL} with pip ({last}); offline, pass the wheel or a "
                        "folder: genrekit weights fetch musicnn --from PATH")
    return wheels[0]


def fetch(name: str, source: str | None = None) -> Path:
    """Fetch and verify pretrained weights (``musicnn``: the musicnn 0.1.0 wheel from PyPI, or
    ``source``, a local wheel or folder of the checkpoints) into :func:`cache_root`; returns their folder."""
    if name != "musicnn":
        raise UserError(f"unknown weights {name!r} (known: musicnn)")
    dest = cache_root() / "musicnn"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if source is None:
            files = _read_from_wheel(_download_wheel(tmp))
        else:
            src = Path(source).expanduser()
            if not src.exists():
                raise UserError(f"--from {source}: not found")
            files = _read_from_folder(src) if src.is_dir() else _read_from_wheel(src)
        bad = [rel for rel, data in files.items() if _sha256(data) != MUSICNN_FILES[rel]]
        if bad:
            raise UserError(f"checksum mismatch for {', '.join(bad)}: not the musicnn 0.1.0 checkpoints")
        staging = dest.parent / f".musicnn-staging-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        for rel, data in files.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_bytes(data)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    return dest
