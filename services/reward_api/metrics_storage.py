"""The Prometheus multiprocess directory: prepared, checked, and kept from filling up.

Every worker writes its samples to mmap files in ``PROMETHEUS_MULTIPROC_DIR``. Two ways this went
wrong (issue 11): on a full file system every worker died with SIGBUS at its first metric write
and was restarted forever, with no cause logged; and a dead worker's files stayed for good, so
restarts filled the directory.

* :func:`prepare` (``__main__``, before any worker starts) empties the directory and checks it
  can be written with room to spare; if not, metrics are switched off for the whole service,
  loudly: an error in the log, and /metrics answers 503 with the reason, while scoring goes on.
* :func:`check_worker` (each worker, before prometheus_client is imported) does the same check
  for a restarted worker, whose directory may have filled meanwhile.
* :func:`fold_dead_workers` (each worker at start) adds the counters and histograms of workers
  that are gone into one ``*_archive.db`` file per type and deletes theirs, so totals never go
  down and the directory holds files of live workers only (plus the archive).

Nothing here imports prometheus_client at module level: it picks its storage when first imported.
"""

from __future__ import annotations

import fcntl
import glob
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OFF_ENV = "REWARD_SERVICE_METRICS_OFF"  # set to the reason when metrics are off (inherited by workers)
# Room each worker needs: its files start at 64 KiB per metric type and our label sets are fixed;
# 4 MiB leaves room for growth and for the files of workers that die before being folded.
BYTES_PER_WORKER = 4 * 1024 * 1024
ARCHIVE = "archive"

log = logging.getLogger("reward_api")


def storage_problem(directory: str, workers: int = 1) -> str | None:
    """Why ``directory`` cannot hold the metrics of ``workers`` workers, or None."""
    need = BYTES_PER_WORKER * workers
    try:
        os.makedirs(directory, exist_ok=True)
        free = shutil.disk_usage(directory).free
        if free < need:
            return f"{directory} has {free} bytes free, {need} needed for {workers} worker(s)"
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe_") as probe:
            probe.write(b"\0" * 65536)  # real blocks, not a sparse file: a full tmpfs fails here
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"{directory} cannot be written: {exc}"
    return None


def switch_off(reason: str) -> None:
    """Metrics off for this process and the workers it starts; the service goes on scoring."""
    os.environ.pop(MULTIPROC_ENV, None)
    os.environ[OFF_ENV] = reason
    log.error(
        "metrics are OFF: %s; /metrics answers 503 until the service is restarted with room in %s",
        reason,
        MULTIPROC_ENV,
    )


def off_reason() -> str | None:
    return os.environ.get(OFF_ENV) or None


def prepare(workers: int) -> tuple[str | None, bool]:
    """Use PROMETHEUS_MULTIPROC_DIR emptied (old files would add stale counts), else a private temp
    dir. Returns the directory (None: metrics off) and whether it is ours to delete at exit."""
    os.environ.pop(OFF_ENV, None)  # decided here, for this run: never inherited from a caller
    directory = os.environ.get(MULTIPROC_ENV)
    owned = not directory
    try:
        if directory:
            os.makedirs(directory, exist_ok=True)
            for entry in os.scandir(directory):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        else:
            directory = tempfile.mkdtemp(prefix="reward_api_metrics_")
            os.environ[MULTIPROC_ENV] = directory
    except OSError as exc:
        switch_off(f"{directory or 'a temporary directory'} cannot be prepared: {exc}")
        return None, False
    problem = storage_problem(directory, workers)
    if problem is not None:
        switch_off(problem)
        if owned:
            shutil.rmtree(directory, ignore_errors=True)
        return None, False
    return directory, owned


def check_worker() -> None:
    """In a (re)started worker, before prometheus_client is imported: room for this worker?"""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        problem = storage_problem(directory)
        if problem is not None:
            switch_off(f"worker {os.getpid()}: {problem}")


@contextmanager
def _locked(directory: str):
    with open(os.path.join(directory, ".lock"), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_of(path: str) -> int | None:
    stem = os.path.basename(path)[:-3].rsplit("_", 1)[-1]
    return int(stem) if stem.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fold_dead_workers(directory: str) -> int:
    """Fold the counter and histogram files of dead workers into the archive; returns how many
    files were removed. Gauge files of dead workers (none are used) are simply removed."""
    from prometheus_client.mmap_dict import MmapedDict

    removed = 0
    with _locked(directory):
        dead = [
            path
            for path in glob.glob(os.path.join(directory, "*.db"))
            if (pid := _pid_of(path)) is not None and pid != os.getpid() and not _alive(pid)
        ]
        for kind in ("counter", "histogram"):
            files = [path for path in dead if os.path.basename(path).startswith(kind + "_")]
            if not files:
                continue
            archive = os.path.join(directory, f"{kind}_{ARCHIVE}.db")
            totals: dict[str, float] = {}
            for path in ([archive] if os.path.exists(archive) else []) + files:
                for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(path):
                    totals[key] = totals.get(key, 0.0) + value
            # Written aside, then swapped in: a scrape sees the old archive or the new one whole.
            staging = os.path.join(directory, f".{kind}_{ARCHIVE}.tmp")
            merged = MmapedDict(staging)
            try:
                for key, value in totals.items():
                    merged.write_value(key, value, 0.0)
            finally:
                merged.close()
            os.replace(staging, archive)
            for path in files:
                os.unlink(path)
                removed += 1
        for path in dead:
            if os.path.exists(path):  # gauges
                os.unlink(path)
                removed += 1
    return removed
