"""Progress bars for the long steps of every command, from one switch.

A command decides once whether bars are shown (:func:`wanted`: never with ``--quiet``, as
``--progress`` / ``--no-progress`` says, else when stderr is a terminal) and runs inside
:func:`showing`; the long loops below it — the frozen backbone's embedding of every track,
a cross-validation's folds, the scoring of an evaluation — open a :func:`bar`, which draws on
stderr only inside ``showing(True)``. Library calls outside a command draw nothing.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys

_SHOW: contextvars.ContextVar[bool] = contextvars.ContextVar("genrekit_progress", default=False)


def wanted(progress: bool | None = None, quiet: bool = False) -> bool:
    """Whether a command shows progress bars: never when ``quiet``; ``progress`` True/False
    (``--progress`` / ``--no-progress``) as asked; None: when stderr is a terminal."""
    if quiet:
        return False
    if progress is not None:
        return bool(progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


@contextlib.contextmanager
def showing(enabled: bool):
    """Bars opened by :func:`bar` inside the block are drawn (``enabled``) or not."""
    token = _SHOW.set(bool(enabled))
    try:
        yield
    finally:
        _SHOW.reset(token)


def enabled() -> bool:
    """Whether bars are drawn here (inside ``showing(True)``)."""
    return _SHOW.get()


def bar(total: int | None = None, desc: str = "", unit: str = "it", enabled: bool | None = None):
    """A tqdm bar on stderr (a context manager; ``.update(n)``), drawn when bars are shown here
    (``enabled`` None) or as ``enabled`` says, and cleared when it closes."""
    from tqdm import tqdm

    on = _SHOW.get() if enabled is None else bool(enabled)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not on, leave=False,
                dynamic_ncols=True)


def write(msg: str, file=None) -> None:
    """Print a line (stdout by default) without breaking a bar being drawn."""
    out = file or sys.stdout
    if _SHOW.get():
        from tqdm import tqdm

        tqdm.write(msg, file=out)
        out.flush()
    else:
        print(msg, file=out, flush=True)


__all__ = ["wanted", "showing", "enabled", "bar", "write"]
