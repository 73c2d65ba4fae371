"""Command-line options: the argument types every command shares, and options generated from
an option dataclass's field metadata (:func:`option`), so that a setting's flag, help text,
choices and default are written once, in the dataclass, and every command that offers it
(``genrekit train``, ``genrekit cv``) reads them from there.

Light on purpose: importing this module (and so ``genrekit --help``) loads no TensorFlow.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from genrekit.models.registry import REGISTRY  # no TensorFlow

# Feature options a user would set (below these a feature is no longer a picture of music: --sr 1
# decodes nothing, --n-fft 1 has no frequency axis, --image-seconds 0.001 is a sliver of one
# STFT frame, --mfcc-hop 0.0001 asks for 300,000 sequences per 30 s track)
MIN_SR, MIN_N_FFT, MIN_N_MELS = 8000, 64, 8
MIN_IMAGE_SECONDS, MIN_IMAGE_HOP, MIN_MFCC_SECONDS, MIN_MFCC_HOP = 0.5, 0.1, 0.1, 0.01


# -- argument types ------------------------------------------------------------------------------

def floats(text: str) -> tuple[float, ...]:
    """``"0.9,1.1"`` -> ``(0.9, 1.1)``."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def positive_float(text: str) -> float:
    """A finite number above 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def in_range(kind, lo, hi=None, unit: str = ""):
    """An argparse type: a number of ``kind`` (int or float) from ``lo`` to ``hi`` (None: no upper
    bound here; the feature config's own cost limits still apply), refused by the parser in one
    line before any work."""
    what = "a whole number" if kind is int else "a number"

    def show(v):
        return str(v) if kind is int else f"{v:g}"

    span = f"from {show(lo)} to {show(hi)}" if hi is not None else f"of at least {show(lo)}"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not (lo <= v and (hi is None or v <= hi)):  # NaN fails too
            raise argparse.ArgumentTypeError(f"expected {what} {span}{unit}, got {text!r}")
        return v

    parse.__name__ = kind.__name__
    return parse


def probability(text: str) -> float:
    """A number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a probability in [0, 1], got {text!r}") from None
    if not 0 <= v <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return v


def names(text: str) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def shard(text: str) -> tuple[int, int]:
    """``"1/4"`` -> ``(1, 4)``."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N, e.g. 1/4, got {text!r}") from None
    return k, n


def size(text: str) -> tuple[int, int]:
    """``"256x128"`` -> ``(256, 128)``; ``"64"`` -> ``(64, 64)``."""
    try:
        parts = [int(x) for x in text.lower().replace("×", "x").split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH like 256x256, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH like 256x256, got {text!r}")
    return parts[0], parts[1]


def arch_type(known: list[str], refusal: str = ""):
    """--arch: one of ``known`` (registered architectures), refused by the parser first."""
    def arch(text: str) -> str:
        if text not in REGISTRY:
            raise argparse.ArgumentTypeError(f"unknown architecture {text!r} (known: "
                                             f"{', '.join(known)})")
        if text not in known:
            raise argparse.ArgumentTypeError(f"{refusal}; {text} is not one (choose from "
                                             f"{', '.join(known)})")
        return text

    return arch


def add_progress_args(p: argparse.ArgumentParser, quiet: str | None = "no progress bars") -> None:
    """--progress / --no-progress (and --quiet): every command's progress bars, one switch
    (:mod:`genrekit.progress`)."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars on stderr (default: when stderr is a terminal; never with "
                        "--quiet)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help=quiet)


# -- options from dataclass fields ---------------------------------------------------------------

def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           type: Callable | None = None, choices: Iterable | None = None,
           metavar: str | None = None, action: Any = None, convert: Callable | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a command-line option (:func:`add_options`).

    ``flag`` defaults to ``--`` and the field name with ``-`` for ``_``; ``help`` may use
    argparse's ``%(default)s``; a bool field is a switch (``store_true``, or ``store_false``
    for a field that defaults to True, e.g. ``flag="--no-cache-base"``); ``convert`` turns the
    parsed value into the field's (``--hparam`` items into a dict). A field with no default is
    a required option::

        @dataclass
        class Options:
            data: str = option(help="feature folder")
            batch_size: int = option(32, "default %(default)s", type=int)
    """
    meta = {"help": help, "flag": flag, "type": type,
            "choices": None if choices is None else tuple(choices),
            "metavar": metavar, "action": action, "convert": convert}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"option": meta})
    return dataclasses.field(default=default, metadata={"option": meta})


def option_fields(cls, only: Iterable[str] | None = None) -> list[dataclasses.Field]:
    """The fields of ``cls`` made with :func:`option` (all, or those named in ``only``), in the
    dataclass's order."""
    fields = [f for f in dataclasses.fields(cls) if "option" in f.metadata]
    if only is None:
        return fields
    wanted = set(only)
    unknown = wanted - {f.name for f in fields}
    if unknown:
        raise ValueError(f"{cls.__name__} has no option field {', '.join(sorted(unknown))}")
    return [f for f in fields if f.name in wanted]


def _argument(f: dataclasses.Field, help_text: str | None) -> tuple[str, dict]:
    meta = f.metadata["option"]
    flag = meta["flag"] or "--" + f.name.replace("_", "-")
    default = None if f.default is dataclasses.MISSING else f.default
    action = meta["action"]
    if action is None and isinstance(default, bool) and meta["type"] is None:
        action = "store_false" if default else "store_true"
    kw: dict[str, Any] = {"dest": f.name, "help": meta["help"] if help_text is None else help_text}
    if action is not None:
        kw["action"] = action
    if action not in ("store_true", "store_false"):
        kw["default"] = default
        for key in ("type", "choices", "metavar"):
            if meta[key] is not None:
                kw[key] = meta[key]
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        kw["required"] = True
    return flag, kw


def add_options(p, cls, only: Iterable[str] | None = None, skip: Iterable[str] = (),
                help: dict[str, str] | None = None) -> None:
    """Add ``cls``'s option fields (or those named in ``only``, less those in ``skip``) to
    parser or group ``p``, each with the dest of its field name; ``help`` replaces a field's
    help text for this command."""
    for f in option_fields(cls, only):
        if f.name in skip:
            continue
        flag, kw = _argument(f, (help or {}).get(f.name))
        p.add_argument(flag, **kw)


def option_values(cls, args: argparse.Namespace, only: Iterable[str] | None = None) -> dict:
    """The parsed values of ``cls``'s option fields (or those named in ``only``), converted to
    the fields' types, by field name, in the dataclass's order."""
    out = {}
    for f in option_fields(cls, only):
        value = getattr(args, f.name)
        convert = f.metadata["option"]["convert"]
        out[f.name] = convert(value) if convert is not None else value
    return out


def from_args(cls, args: argparse.Namespace, **given):
    """``cls`` built from the parsed options of its option fields, plus ``given`` (the fields
    a command sets itself)."""
    return cls(**{**option_values(cls, args), **given})


__all__ = ["add_options", "add_progress_args", "arch_type", "floats", "from_args", "in_range",
           "names", "option", "option_fields", "option_values", "positive_float", "probability",
           "shard", "size"]
