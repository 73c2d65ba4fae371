"""The ``genrekit`` command line: the parser, built from the commands of
:mod:`genrekit.commands` (one module each), and the error handling every command shares.

Every user-facing failure is a one-line ``genrekit: error: ...`` on stderr with exit code 2;
heavy libraries (TensorFlow) are imported only by the commands that need them.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import logging
import os
import sys
import tempfile
import warnings

from genrekit import __version__, progress
from genrekit.commands import COMMANDS
from genrekit.data_tools.audio import silenced_stderr, stderr_line_guard
from genrekit.data_tools.errors import DataError
from genrekit.errors import UserError


def _user_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = [UserError, DataError]
    for mod, name in (("genrekit.models.errors", "ModelError"), ("genrekit.evaluation.errors", "EvaluationError")):
        if mod in sys.modules:
            errs.append(getattr(sys.modules[mod], name))
    return tuple(errs)


class _QuietImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import TensorFlow with file descriptor 2 pointed away: while its C++ libraries load they
    write about six lines of start-up log (oneDNN, CUDA, absl) straight to fd 2, before any
    setting such as ``TF_CPP_MIN_LOG_LEVEL`` is read. What they wrote is shown only if the
    import fails."""

    def __init__(self):
        self._loader = None

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or self._loader is not None:
            return None
        sys.meta_path.remove(self)  # once: the real finders locate the package
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with tempfile.TemporaryFile() as log:
            try:
                # shared with the audio decoder threads, which may hold fd 2 silenced meanwhile
                with silenced_stderr(capture=log):
                    self._loader.exec_module(module)
            except BaseException:
                log.seek(0)
                with stderr_line_guard():
                    sys.stderr.write(log.read().decode("utf-8", "replace"))
                raise


def quiet_libraries() -> None:
    """Keep library chatter off stderr, so that a failing command prints exactly one line: the
    C++ log of TensorFlow (``TF_CPP_MIN_LOG_LEVEL=3``, and its start-up lines while it is
    imported), its and absl's Python loggers, and Python warnings. ``GENREKIT_DEBUG=1`` keeps
    them all."""
    if os.environ.get("GENREKIT_DEBUG"):
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    for name in ("tensorflow", "absl", "keras", "h5py", "numba"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every other genrekit error
        self.exit(2, f"genrekit: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """``genrekit``'s parser: one subparser per command of :data:`genrekit.commands.COMMANDS`,
    each running its module's ``run``."""
    p = _Parser(prog="genrekit", description="Music genre classification by transfer learning.")
    p.add_argument("--version", action="version", version=f"genrekit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(func=command.run)
    return p


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv: list[str] | None = None) -> int:
    """Run ``genrekit`` with ``argv`` (default: the command line); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    quiet_libraries()
    try:
        with progress.showing(progress.wanted(getattr(args, "progress", None), getattr(args, "quiet", False))):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("genrekit: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - every user-facing failure becomes one line
        if isinstance(exc, _user_errors()):
            print(f"genrekit: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
            print(f"genrekit: error: {_one_line(exc.strerror or exc)}{where}", file=sys.stderr)
            return 2
        if isinstance(exc, MemoryError):
            print("genrekit: error: out of memory (the input is too large for this machine)", file=sys.stderr)
            return 2
        if os.environ.get("GENREKIT_DEBUG"):
            raise
        print(f"genrekit: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set GENREKIT_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
