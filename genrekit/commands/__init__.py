"""The ``genrekit`` commands, one module each: ``add_parser(subparsers)`` adds the command's
parser (and returns it), ``run(args) -> int`` runs it. :data:`COMMANDS` lists them in the order
``genrekit --help`` shows; a new command is one module and one line here."""
from genrekit.commands import (
    adapt,
    augment,
    compare,
    cv,
    demo,
    embed,
    eval_spotify,
    evaluate,
    export,
    fetch_spotify,
    gan,
    merge_shards,
    predict,
    serve,
    suggest,
    train,
    weights,
)

COMMANDS = (
    augment,
    merge_shards,
    train,
    predict,
    adapt,
    suggest,
    serve,
    export,
    embed,
    evaluate,
    compare,
    cv,
    fetch_spotify,
    eval_spotify,
    gan,
    weights,
    demo,
)

__all__ = ["COMMANDS"]
