"""``genrekit serve``: a local web app and JSON API for a run."""
from __future__ import annotations

import argparse
import os

from genrekit.options import positive_float


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``serve`` parser (--token defaults to ``$GENREKIT_SERVE_TOKEN``)."""
    sv = sub.add_parser("serve", help="a local web app and JSON API for a run (predict uploads, a "
                                      "live microphone stream, suggest/label/adapt over --library)")
    sv.add_argument("--model", required=True, help="run folder")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; any other "
                         "needs --token)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    sv.add_argument("--token", default=os.environ.get("GENREKIT_SERVE_TOKEN"), metavar="T",
                    help="every /v1 request must send 'Authorization: Bearer T' (default: "
                         "$GENREKIT_SERVE_TOKEN)")
    sv.add_argument("--max-upload-mb", type=positive_float, default=50.0, metavar="MB",
                    help="largest request body (default 50; larger: 413)")
    sv.add_argument("--max-seconds", type=positive_float, default=3600.0, metavar="S",
                    help="longest uploaded audio file (default 3600 s)")
    sv.add_argument("--library", default=None, metavar="DIR",
                    help="your music (read only): suggest tracks to label, label them, adapt the "
                         "run from the page")
    sv.add_argument("--workers", type=int, default=2, help="analyses at once (default 2)")
    sv.add_argument("--queue", type=int, default=16,
                    help="requests that may wait for a worker (default 16; beyond: 503 with "
                         "Retry-After)")
    return sv


def run(a) -> int:
    """Serve until interrupted."""
    from genrekit.serve import check_bind, serve

    check_bind(a.host, a.token)  # before the run is loaded: a refused address costs nothing
    serve(a.model, host=a.host, port=a.port, token=a.token, max_upload_mb=a.max_upload_mb,
          max_seconds=a.max_seconds, library=a.library, workers=a.workers, queue=a.queue)
    return 0
