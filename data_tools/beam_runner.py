"""``genrekit augment --runner beam``: the per-track jobs of :mod:`genrekit.data_tools.pipeline` run as an
Apache Beam pipeline (optional extra ``genrekit[beam]``).

The pipeline is ``Create(jobs) | Reshuffle | ParDo(process one track)``; each element runs the
very function the local path runs (:func:`genrekit.data_tools.pipeline.process_track`), so the feature
files, their atomic writes, the per-track state and the resume rules are the same, and with one
BLAS thread per worker (as ``--workers N`` has) the bytes are the same. Each worker also writes
its track's result as a small JSON file under ``<out>/.state/beam-<pid>/``; after the pipeline
the launching process reads them back to write the manifest and the report, then removes that
folder. Nothing is returned through the runner, so any runner whose workers see ``--data`` and
``--out`` at the same paths (one machine, NFS, a mounted bucket) gives the same folder.

Options are Beam's own pipeline options, given as ``KEY=VALUE`` (``--beam-option
direct_num_workers=2``); they are checked before anything is written. With no ``runner``
option the pipeline runs on Beam's local Python runner (the engine DirectRunner uses for batch
pipelines) with ``--workers`` processes, so no network is touched.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path

from genrekit.data_tools.errors import DataError
from genrekit.data_tools.fsio import (
    TempScheme,
    loads_json,
    remove_stale_temporaries,
    write_json_atomic,
)

BEAM_RESULTS_PREFIX = "beam-"
LOCAL_RUNNERS = ("", "DirectRunner", "FnApiRunner")


def _import_beam():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # Beam's import logs optional-client warnings on the root logger
    try:
        import apache_beam as beam
    except ImportError:
        raise DataError("--runner beam needs Apache Beam: from a genrekit checkout pip install \".[beam]\" "
                        "(or pip install apache-beam)") from None
    finally:
        root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    return beam


def beam_flags(options, workers: int = 1) -> list[str]:
    """``KEY=VALUE`` (or ``--KEY=VALUE``, or a bare ``KEY`` for a switch) -> Beam's command-line
    flags, checked against every option Beam knows; refused with one line otherwise. On the
    local runner, ``--workers N`` becomes ``direct_num_workers=N`` in N processes unless given."""
    _import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    flags = []
    for text in options or ():
        text = str(text).strip()
        key = text.lstrip("-").split("=", 1)[0]
        if not key or not all(c.isalnum() or c == "_" for c in key):
            raise DataError(f"bad --beam-option {text!r}: expected KEY=VALUE, e.g. direct_num_workers=2")
        flags.append("--" + text.lstrip("-"))
    parser = _BeamArgumentParser(allow_abbrev=False)
    seen = set()
    for cls in PipelineOptions.__subclasses__():
        if str(cls) not in seen:
            seen.add(str(cls))
            cls._add_argparse_args(parser)  # noqa: SLF001 - how Beam itself lists its options
    try:
        known, unknown = parser.parse_known_args(flags)
    except SystemExit:  # argparse already printed why (a bad value)
        raise DataError(f"bad --beam-option value in: {' '.join(flags)}") from None
    if unknown:
        raise DataError(f"unknown Beam pipeline option {unknown[0]!r} (see Beam's pipeline options)")
    given = {f.lstrip("-").split("=", 1)[0] for f in flags}
    if (known.runner or "") in LOCAL_RUNNERS:
        if "direct_num_workers" not in given:
            flags.append(f"--direct_num_workers={workers}")
        if "direct_running_mode" not in given and workers > 1:
            flags.append("--direct_running_mode=multi_processing")
    return flags


def _make_dofn(beam):  # a beam.DoFn subclass, made here: Beam is an optional import
    class ProcessTrack(beam.DoFn):
        """One track: the local path's process_track (passed in, so that this module does not
        import the pipeline that imports it), with one BLAS thread per worker."""

        def __init__(self, process):
            super().__init__()
            self._process = process

        def setup(self):
            try:
                from threadpoolctl import threadpool_limits

                self._limits = threadpool_limits(1)
            except Exception:  # pragma: no cover
                self._limits = None

        def teardown(self):  # the local in-memory runner works in the launching process
            if self._limits is not None:
                self._limits.restore_original_limits()

        def process(self, job, results_dir):
            try:
                res = self._process(job)
                doc = {"result": res.to_json(), "skipped": res.skipped}  # skipped: finished earlier
            except DataError as exc:  # cannot write the output: the launcher reports it
                doc = {"error": str(exc)}
            write_json_atomic(Path(results_dir) / f"{job[0].track_id}.json", doc, only_if_changed=False)
            yield job[0].track_id

    return ProcessTrack


STATE_DIR = ".state"


def _results_dir(out: Path) -> Path:
    return out / STATE_DIR / f"{BEAM_RESULTS_PREFIX}{os.getpid()}"


@contextlib.contextmanager
def _stderr_to(path: Path | None):
    """Send file descriptor 2 (this process's and its children's stderr) to ``path``."""
    if path is None:
        yield None
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "wb") as f:
            os.dup2(f.fileno(), 2)
            try:
                yield path
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _remove_results(p: Path, match) -> int:
    if not p.is_dir() or p.is_symlink():
        return 0
    shutil.rmtree(p, ignore_errors=True)
    return 1


_RESULTS = TempScheme(re.compile(re.escape(BEAM_RESULTS_PREFIX) + r"(?P<pid>\d+)\Z"), _remove_results)


def remove_stale_results(out: Path) -> None:
    """Remove result folders a killed Beam launch left (only ``.state/beam-<pid>`` of a process
    that is gone; ``.state`` is genrekit's own folder)."""
    state = out / STATE_DIR
    if not state.is_dir():
        return
    remove_stale_temporaries(state, schemes=(_RESULTS,))


def run_beam(jobs: list, out: Path, flags: list[str], log, process, result_type) -> list:
    """Run ``jobs`` (the local path's job tuples) as a Beam pipeline, each through ``process``
    (the local path's per-track function); return their results (``result_type`` objects)."""
    beam = _import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    if not jobs:
        return []
    out = Path(out)
    remove_stale_results(out)
    results_dir = _results_dir(out)
    shutil.rmtree(results_dir, ignore_errors=True)
    results_dir.mkdir(parents=True)
    options = PipelineOptions(flags)
    runner_name = options.view_as(StandardOptions).runner or ""
    runner = None
    if runner_name in LOCAL_RUNNERS:  # no Prism download attempt: Beam's own local Python engine
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    log(f"augment: {len(jobs)} tracks on Beam ({runner_name or 'local FnApiRunner'})")
    runner_log = out / STATE_DIR / f"{BEAM_RESULTS_PREFIX}runner.log"
    try:
        # the local runner's worker processes log their start-up on the inherited stderr:
        # kept in a file, shown only by name when the pipeline fails
        with _stderr_to(results_dir / "runner.log" if runner is not None else None) as captured:
            try:
                with beam.Pipeline(runner=runner, options=options) as p:
                    (p | "tracks" >> beam.Create(jobs, reshuffle=False)
                       | "spread" >> beam.Reshuffle()
                       | "process" >> beam.ParDo(_make_dofn(beam)(process), str(results_dir)))
                failure = None
            except DataError:
                raise
            except Exception as exc:  # noqa: BLE001 - a runner failure is one line, not a Beam traceback
                failure = exc
        if failure is not None:
            msg = (str(failure).strip().splitlines() or [""])[-1][:300]
            where = ""
            if captured is not None:
                try:
                    shutil.copyfile(captured, runner_log)
                    where = f" (the runner's log: {runner_log})"
                except OSError:
                    pass
            raise DataError(f"the Beam pipeline failed ({type(failure).__name__}: {msg}); tracks finished "
                            f"so far are kept: rerun to resume{where}")
        results, errors = [], []
        by_id = {j[0].track_id: j for j in jobs}
        for tid in sorted(by_id):
            p = results_dir / f"{tid}.json"
            try:
                doc = loads_json(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise DataError(f"the Beam runner returned no result for track {tid}; rerun to resume") from None
            if "error" in doc:
                errors.append(doc["error"])
                continue
            r = result_type(**doc["result"])
            r.skipped = bool(doc.get("skipped"))
            results.append(r)
        if errors:
            raise DataError(errors[0])
        return results
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)
