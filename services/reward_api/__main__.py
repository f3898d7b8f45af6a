"""``python -m services.reward_api --host H --port P --workers N`` (``--help`` lists every setting).

Order matters here: the metrics directory and the REWARD_API_* variables are set before uvicorn
starts (and before anything imports prometheus_client), because worker processes build the app
from the environment they inherit.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys

from . import metrics_storage
from .scoring_pool import ScoringPool, pool_size
from .settings import Settings, SettingsError, parse_cli

# uvicorn's h11 protocol with the header limit (protocol.py); an import string, so that worker
# processes load it themselves.
HTTP_PROTOCOL = "services.reward_api.protocol:HeaderLimitedH11Protocol"


def check_rewards(settings: Settings) -> None:
    """Fail before binding the port if the default reward set is not servable."""
    from .app import resolve_defaults  # imports prometheus_client: only after the env is set

    resolve_defaults(settings)


def start_pool(settings: Settings) -> ScoringPool | None:
    """The host's scoring processes (scoring_pool.py), started before the workers so that they
    inherit its socket's path; None with REWARD_API_SCORING_PROCESSES=0."""
    size = pool_size(settings.scoring_processes)
    if size == 0:
        return None
    pool = ScoringPool(size)
    pool.start()
    return pool


class Terminated(Exception):
    """SIGTERM, raised in the main thread so that ``finally`` stops the pool and removes files."""


def _terminated(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    settings = parse_cli(argv)
    logging.basicConfig(
        level=settings.log_level.upper() if settings.log_level != "trace" else "DEBUG",
        format="%(levelname)s:  %(message)s",
    )
    directory, owned = metrics_storage.prepare(settings.workers)
    pool = None
    terminated = False
    os.environ.update(settings.to_env())
    try:
        try:
            check_rewards(settings)
        except SettingsError as exc:
            print(f"invalid settings: {exc}", file=sys.stderr)
            return 2
        import uvicorn

        pool = start_pool(settings)
        # uvicorn handles SIGTERM while it runs, then sends it again to this process with the
        # handler it found: this one, so the cleanup below runs before the process ends by it.
        signal.signal(signal.SIGTERM, _terminated)
        uvicorn.run(
            "services.reward_api.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            http=HTTP_PROTOCOL,
            h11_max_incomplete_event_size=settings.max_header_bytes,
            # Keep-alive longer than a trainer's pause between steps, so batches reuse connections.
            timeout_keep_alive=75,
            access_log=False,
        )
        return 0
    except Terminated:
        terminated = True
        return 128 + signal.SIGTERM
    finally:
        if pool is not None:
            pool.stop()
        if owned and directory:
            shutil.rmtree(directory, ignore_errors=True)
        if terminated:  # end as SIGTERM ends a process, as before (exit status -15 to a parent)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main())
