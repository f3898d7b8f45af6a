"""``python -m services.reward_api --host H --port P --workers N``.

Order matters here: the metrics directory and the REWARD_API_* variables are set before uvicorn
starts (and before anything imports prometheus_client), because worker processes build the app
from the environment they inherit.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from .settings import Settings, SettingsError, parse_cli

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # metrics.MULTIPROC_ENV; not imported: see above


def prepare_metrics_dir() -> tuple[str, bool]:
    """Use PROMETHEUS_MULTIPROC_DIR emptied (old files would add stale counts), else a private
    temp dir. Returns the directory and whether it is ours to delete at exit."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        for entry in os.scandir(directory):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        return directory, False
    directory = tempfile.mkdtemp(prefix="reward_api_metrics_")
    os.environ[MULTIPROC_ENV] = directory
    return directory, True


def check_rewards(settings: Settings) -> None:
    """Fail before binding the port if the default reward set is not servable."""
    from .app import resolve_defaults  # imports prometheus_client: only after the env is set

    resolve_defaults(settings)


def main(argv: list[str] | None = None) -> int:
    settings = parse_cli(argv)
    directory, owned = prepare_metrics_dir()
    os.environ.update(settings.to_env())
    try:
        try:
            check_rewards(settings)
        except SettingsError as exc:
            print(f"invalid settings: {exc}", file=sys.stderr)
            return 2
        import uvicorn

        uvicorn.run(
            "services.reward_api.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            # Keep-alive longer than a trainer's pause between steps, so batches reuse connections.
            timeout_keep_alive=75,
            access_log=False,
        )
        return 0
    finally:
        if owned:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
