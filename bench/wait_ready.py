"""``python -m bench.wait_ready PORT [SECONDS]``: wait until the reward service on 127.0.0.1:PORT is ready.

The GPU scripts start the service in the background and must not train or evaluate before every
worker can score (``GET /readyz`` answers 200). Exits 1 with a message if it never becomes ready.
"""

from __future__ import annotations

import sys
import time

import httpx


def wait_ready(port: int, seconds: float = 60.0) -> bool:
    url = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.2)
    return False


def main(argv: list[str]) -> int:
    port, seconds = int(argv[0]), float(argv[1]) if len(argv) > 1 else 60.0
    if wait_ready(port, seconds):
        return 0
    print(f"reward service on port {port} not ready after {seconds:.0f} s; see its log", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
