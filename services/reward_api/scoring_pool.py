"""Every core of the host for any traffic shape: a pool of scoring processes shared by the workers.

Why: uvicorn's workers share one listening socket and a keep-alive connection stays with the
worker that accepted it, so a trainer sending one 4,096-sample request per step (or a client with
two connections that both landed on one worker) was scored on one core whatever ``--workers`` said.

How: ``__main__`` starts one `ScoringPool` for the host (``REWARD_API_SCORING_PROCESSES``, by
default one process per usable core) before uvicorn; its processes wait on one Unix socket. A
worker that has more than ``REWARD_API_CHUNK_SAMPLES`` samples to score at once splits each
request's samples into chunks and sends each chunk over its own connection to that socket
(`score_batch_pooled`). Only a process waiting for work accepts a connection, so chunks go to
idle cores, from whichever worker they come: one request uses every core, and two workers busy at
once share the same processes instead of oversubscribing the cores. Smaller batches are scored in
the worker itself, as before (no hop).

The worker's own part of a large request (reading and parsing it before the first chunk, putting
the answers together after the last) leaves a core idle, and so do the gaps between a process's
chunks; both are kept short: each chunk's metrics are tallied by the process that scored it
(metrics_tally), and each worker keeps two chunks per process in flight (the next one waits,
whole, in the socket's backlog).

Results are the engine's own: each chunk is one `score_batch` call, on a piece of one large request
or on several small requests whole (`chunk_ranges`), and the answers are put back in order. A
request's budgets stay the request's: each chunk is checked against the whole budget on its own (a
chunk over it stops early), and the worker then checks the request's box pairs and explain bytes
sample by sample, in order, as one `score_batch` call does; a request over a budget is scored again
in the worker, so its 4xx is word for word the one-batch answer. The json_repair time
(REWARD_API_MAX_REPAIR_SECONDS) is shared out among a request's chunks in proportion to their
samples, so a request never gets more of it in total.

Failures: a scoring process that dies is started again by the pool's watcher thread (logged); the
chunk it held is sent once more (another process takes it); a chunk that loses its process twice
fails its request with a 500 that says so. A worker that dies mid-request leaves the process
writing to a closed connection, which it ignores. Shutdown: ``__main__`` stops the pool after
uvicorn has finished (in-flight requests get their chunks scored); the processes ignore SIGINT and
SIGTERM sent to the whole process group for that reason, and leave by themselves when the process
that started them dies, so none is left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import socket
import struct
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import metrics_tally
from .engine.registry import RegistryError, resolve_rewards
from .engine.scoring import BatchScores, BatchStats, ExplainTooLarge, TooManyBoxPairs, _json_size, score_batch

log = logging.getLogger("reward_api")

POOL_ENV = "REWARD_SERVICE_SCORING_POOL"  # the pool's socket path, set by __main__ for its workers
SOCKET_NAME = "scoring.sock"
STOP_SECONDS = 10.0  # how long stop() waits for a process to finish its chunk before killing it
_FRAME = struct.Struct("!Q")


CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset), capped by a container's CPU
    quota (``docker run --cpus 2``), which the affinity does not show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        with open(CGROUP_CPU_MAX) as limits:
            quota, period = limits.read().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file: no quota to respect
        pass
    return cores


def pool_size(configured: int | None) -> int:
    """REWARD_API_SCORING_PROCESSES: unset means one process per usable core; 0 means no pool."""
    return usable_cores() if configured is None else configured


# ---------------------------------------------------------------- framing


def _send(conn: socket.socket, payload: bytes) -> None:
    conn.sendall(_FRAME.pack(len(payload)))  # two calls: no copy of a chunk's payload to prepend 8 bytes
    conn.sendall(payload)


def _recv(conn: socket.socket) -> bytearray:
    (size,) = _FRAME.unpack(_recv_exactly(conn, _FRAME.size))
    return _recv_exactly(conn, size)


def _recv_exactly(conn: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = conn.recv_into(view[got:])
        if n == 0:
            raise EOFError(f"connection closed after {got} of {size} bytes")
        got += n
    return buffer  # pickle reads it as it is: no copy


# ---------------------------------------------------------------- the pool (in __main__)


class ScoringPool:
    """``size`` scoring processes accepting on one Unix socket in a private directory; a watcher
    thread starts a process again when one dies. `start` sets POOL_ENV for the workers."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a scoring pool needs at least one process, got {size}")
        self.size = size
        self.directory = ""
        self.path = ""
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded process
        self._listener: socket.socket | None = None
        self._stop_read: Any = None
        self._stop_write: Any = None
        self._processes: list[Any] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="reward_api_pool_")  # 0700: this user's only
        self.path = os.path.join(self.directory, SOCKET_NAME)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(max(128, 4 * self.size))
        self._listener = listener
        # Closed by stop(): every process sees the end of this pipe and leaves once idle.
        self._stop_read, self._stop_write = self._context.Pipe(duplex=False)
        with _group_signals_ignored():
            self._processes = [self._spawn() for _ in range(self.size)]
        self._watcher = threading.Thread(target=self._watch, name="scoring-pool-watcher", daemon=True)
        self._watcher.start()
        os.environ[POOL_ENV] = self.path
        log.info(
            "scoring pool: %d processes (pids %s) on %s",
            self.size,
            " ".join(str(p.pid) for p in self._processes),
            self.path,
        )

    def _spawn(self) -> Any:
        process = self._context.Process(
            target=_serve, args=(self._listener, self._stop_read), name="reward-api-scoring", daemon=False
        )
        process.start()
        return process

    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def _watch(self) -> None:
        while not self._stopping.is_set():
            sentinels = {p.sentinel: i for i, p in enumerate(self._processes)}
            multiprocessing.connection.wait(list(sentinels), timeout=1.0)
            for i, process in enumerate(self._processes):
                if process.is_alive() or self._stopping.is_set():
                    continue
                process.join()
                self._processes[i] = self._spawn()
                self.restarts += 1
                log.warning(
                    "scoring process %d died (exit code %s); started again as pid %d",
                    process.pid,
                    process.exitcode,
                    self._processes[i].pid,
                )

    def stop(self) -> None:
        """Every process leaves (finishing the chunk it holds, up to STOP_SECONDS, else killed)."""
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._stop_write is not None:
            self._stop_write.close()
        for process in self._processes:
            process.join(STOP_SECONDS)
            if process.is_alive():
                process.kill()
                process.join()
        if self._listener is not None:
            self._listener.close()
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        os.environ.pop(POOL_ENV, None)


@contextlib.contextmanager
def _group_signals_ignored():
    """SIGINT and SIGTERM ignored while the processes are started: an ignored signal stays ignored
    across exec, so they never see the ones sent to the whole group (Ctrl-C, ``kill -TERM -PGID``),
    not even while still importing. Python sets handlers in the main thread only; a process started
    again by the watcher thread ignores them once `_serve` runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _serve(listener: socket.socket, stop: Any) -> None:
    """A scoring process: take a chunk when idle, score it, answer, repeat; leave when the pool
    stops or the process that started it is gone."""
    # The pool is stopped by __main__ once uvicorn has finished its requests: a signal sent to the
    # whole group (Ctrl-C, `kill -TERM -PGID`) must not take chunks away from them first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    watched: list[Any] = [listener, stop] + ([parent.sentinel] if parent is not None else [])
    listener.setblocking(False)
    while True:
        ready = multiprocessing.connection.wait(watched)
        if any(item is not listener for item in ready):
            return
        try:
            conn, _ = listener.accept()
        except BlockingIOError:  # another idle process took it
            continue
        with conn:
            conn.setblocking(True)
            _answer(conn)


def _answer(conn: socket.socket) -> None:
    try:
        chunk = pickle.loads(_recv(conn))
    except (OSError, EOFError):  # the worker went away before sending it all
        return
    try:
        result: tuple[str, Any] = ("ok", _score_chunk(chunk))
    except RegistryError:  # a budget passed in this chunk: the worker scores the request itself
        result = ("over_budget", None)
    except Exception as exc:  # a bug: the request gets a 500 naming it
        result = ("failed", f"{type(exc).__name__}: {exc}")
    # OSError: the worker died or its client went away; nobody waits for this answer.
    with contextlib.suppress(OSError):
        _send(conn, pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))


def _score_chunk(chunk: dict) -> tuple[BatchScores, metrics_tally.BatchTally]:
    """The chunk's scores, and its metrics tally (counted here, beside the other chunks)."""
    scores = score_batch(
        chunk["samples"],
        resolve_rewards(chunk["rewards"]),
        chunk["params"],
        chunk["explain"],
        max_gt_boxes=chunk["max_gt_boxes"],
        max_box_pairs=chunk["max_box_pairs"],
        explain_budget=chunk["explain_budget"],
        repair_seconds=chunk["repair_seconds"],
        request_sizes=chunk["request_sizes"],
    )
    return scores, metrics_tally.tally_batch(scores)


# ---------------------------------------------------------------- the workers' side


class ScoringProcessLost(RuntimeError):
    """A chunk's scoring process died, and so did the one that took it again."""


# Chunks one worker keeps in flight per scoring process: one being scored and one already sent,
# waiting in the socket's backlog, so a process that finishes a chunk takes the next at once
# instead of waiting for the worker to read its answer and send another. Measured between the
# chunks of a 4,096-sample request: 6-7 ms per process with one in flight, 4.5 ms with two (the
# rest is the process's own work: answering, releasing the chunk, taking the next).
IN_FLIGHT_PER_PROCESS = 2


class PoolClient:
    """A worker's way to the pool: at most ``IN_FLIGHT_PER_PROCESS * size`` chunks in flight from
    this worker at once (one thread each, waiting on its connection), so one worker alone keeps
    every process busy, its next chunk already waiting."""

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size
        self._threads = ThreadPoolExecutor(IN_FLIGHT_PER_PROCESS * size, thread_name_prefix="scoring-pool")

    def score(self, chunks: list[dict]) -> list[tuple[str, Any]]:
        return list(self._threads.map(self._round_trip, chunks))

    def _round_trip(self, chunk: dict) -> tuple[str, Any]:
        payload = pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)
        for attempt in (1, 2):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    # Room for the whole chunk (up to the kernel's net.core.wmem_max): it waits in
                    # the backlog whole, and the process that takes it need not wait for this
                    # thread to be scheduled again to send the rest.
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _FRAME.size + len(payload))
                    conn.connect(self.path)
                    _send(conn, payload)
                    return pickle.loads(_recv(conn))
            except (OSError, EOFError) as exc:
                log.warning("a scoring process was lost with a chunk of %d samples (attempt %d): %s",
                            len(chunk["samples"]), attempt, exc)  # fmt: skip
        raise ScoringProcessLost(
            f"the scoring processes given a chunk of {len(chunk['samples'])} samples died twice; see the service log"
        )


_client: PoolClient | None = None
_client_lock = threading.Lock()


def client(configured_size: int | None) -> PoolClient | None:
    """This worker's PoolClient, or None where no pool runs (``REWARD_API_SCORING_PROCESSES=0``, or an
    app built in-process, as the tests' TestClient does)."""
    global _client
    path = os.environ.get(POOL_ENV)
    if not path:
        return None
    with _client_lock:
        if _client is None or _client.path != path:
            _client = PoolClient(path, pool_size(configured_size))
        return _client


def score_batch_pooled(
    pool: PoolClient | None,
    chunk_samples: int,
    samples: Sequence[Any],
    rewards: Sequence[Any],
    params: dict,
    explain: bool,
    *,
    max_gt_boxes: int,
    max_box_pairs: int,
    explain_budget: int,
    repair_seconds: float,
    request_sizes: Sequence[int],
) -> tuple[BatchScores, metrics_tally.BatchTally]:
    """`score_batch` with the same arguments and the same answer, each request's samples scored in
    chunks of at most ``chunk_samples`` by the pool, and the batch's metrics tally. No pool, or at
    most one chunk: scored here."""
    budgets = {"max_gt_boxes": max_gt_boxes, "max_box_pairs": max_box_pairs, "explain_budget": explain_budget}

    def here() -> tuple[BatchScores, metrics_tally.BatchTally]:
        scores = score_batch(
            samples, rewards, params, explain, **budgets, repair_seconds=repair_seconds, request_sizes=request_sizes
        )
        return scores, metrics_tally.tally_batch(scores)

    if pool is None or len(samples) <= chunk_samples:
        return here()
    refs = [{"name": r.name, "version": r.version} for r in rewards]
    chunks = [
        {
            "samples": [_row(sample) for lo, hi in ranges for sample in samples[lo:hi]],
            "request_sizes": [hi - lo for lo, hi in ranges],
            "repair_seconds": repair_seconds * share,
            "rewards": refs,
            "params": params,
            "explain": explain,
            **budgets,
        }
        for ranges, share in chunk_ranges(request_sizes, chunk_samples)
    ]
    if len(chunks) == 1:
        return here()
    results = pool.score(chunks)
    if any(kind == "over_budget" for kind, _ in results):
        return here()  # the request's own 4xx, word for word
    failed = [detail for kind, detail in results if kind == "failed"]
    if failed:
        raise RuntimeError(f"scoring a chunk failed: {failed[0]}")
    merged = _merge([scores for _, (scores, _) in results])
    _check_budgets(merged, request_sizes, max_box_pairs, explain_budget)
    return merged, metrics_tally.merged([tally for _, (_, tally) in results])


def chunk_ranges(request_sizes: Sequence[int], chunk_samples: int) -> list[tuple[list[tuple[int, int]], float]]:
    """How a coalesced batch is cut: ``(sample ranges, repair share)`` per chunk, in order. A request
    larger than ``chunk_samples`` is cut into even pieces, one chunk each, each with its share of the
    request's json_repair time; smaller requests go whole, several to a chunk, each with all of it.

    >>> chunk_ranges([10], 4)
    [([(0, 3)], 0.3), ([(3, 6)], 0.3), ([(6, 10)], 0.4)]
    >>> chunk_ranges([2, 2, 1, 5], 4)
    [([(0, 2), (2, 4)], 1.0), ([(4, 5)], 1.0), ([(5, 7)], 0.4), ([(7, 10)], 0.6)]
    """
    chunks: list[tuple[list[tuple[int, int]], float]] = []
    packed: list[tuple[int, int]] = []  # whole small requests, waiting to fill a chunk
    start = 0
    for size in request_sizes:
        end = start + size
        if size > chunk_samples:
            if packed:
                chunks.append((packed, 1.0))
                packed = []
            pieces = math.ceil(size / chunk_samples)
            cuts = [start + size * i // pieces for i in range(pieces + 1)]
            chunks += [([(lo, hi)], (hi - lo) / size) for lo, hi in itertools.pairwise(cuts)]
        else:
            if packed and end - packed[0][0] > chunk_samples:
                chunks.append((packed, 1.0))
                packed = []
            packed.append((start, end))
        start = end
    if packed:
        chunks.append((packed, 1.0))
    return chunks


def _row(sample: Any) -> dict:
    """What score_batch reads of a sample, as a plain dict (cheaper to send than the model)."""
    if type(sample) is dict:
        return sample
    return {"completion": sample.completion, "solution": sample.solution, "completion_tokens": sample.completion_tokens}


def _merge(parts: list[BatchScores]) -> BatchScores:
    first = parts[0]
    failures = [kinds for p in parts for kinds in p.stats.sample_failures]
    return BatchScores(
        values={name: [v for p in parts for v in p.values[name]] for name in first.values},
        versions=first.versions,
        errors=[e for p in parts for e in p.errors],
        error_reasons=[r for p in parts for r in p.error_reasons],
        details=None if first.details is None else [d for p in parts for d in p.details or []],
        stats=BatchStats(
            predicted_boxes=[n for p in parts for n in p.stats.predicted_boxes],
            sample_failures=failures,
            parse_failures=dict(Counter(kind for kinds in failures for kind in kinds)),
            box_pairs=[n for p in parts for n in p.stats.box_pairs],
        ),
    )


def _check_budgets(scores: BatchScores, request_sizes: Sequence[int], max_box_pairs: int, explain_budget: int) -> None:
    """The checks one score_batch call makes as it goes, in the same order, with the same errors."""
    start = 0
    for size in request_sizes:
        pairs, explained = 0, 0
        for index in range(start, start + size):
            pairs += scores.stats.box_pairs[index]
            if pairs > max_box_pairs:
                raise TooManyBoxPairs(max_box_pairs, index - start)
            if scores.details is not None:
                explained += _json_size(scores.details[index])
                if explained > explain_budget:
                    raise ExplainTooLarge(explain_budget, index + 1 - start, size)
        start += size
