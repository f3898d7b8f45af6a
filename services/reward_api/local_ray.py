"""A Ray cluster of several nodes on this machine, with the reward service deployed on it by Serve's
own CLI from deploy/ray/reward-api.yaml: what tests/deploy/test_ray_serve.py and ``python -m
bench.ray_serve`` run, and a way to try the Serve path without a cluster.

Each node is a ``ray start --block`` process in a session of its own: stopping the cluster signals
those process groups (never ``ray stop``, which would stop every Ray on the machine). Every port is
chosen free, the temporary directory is the cluster's own, and each wait is bounded.

Ray registers each node under the host's own interface address, whatever ``--node-ip-address``
says, and its daemons listen on every interface. So the test and the bench run the cluster in a
network namespace of their own that has only loopback (:func:`in_own_network`, ``unshare -n``;
``unshare -rn`` when not root): there the host's address is 127.0.0.1, every node registers as
127.0.0.1, and nothing the cluster opens is reachable from outside the namespace.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .local import REPO_ROOT, free_ports, wait_ready

CONFIG = REPO_ROOT / "deploy" / "ray" / "reward-api.yaml"
APP = "reward-api"


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but loopback (one of
    :func:`in_own_network`'s)."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


class NoNetworkNamespace(RuntimeError):
    """A network namespace of our own cannot be made here; the message says why and the fix."""


def in_own_network(argv: list[str]) -> list[str]:
    """``argv`` as a command that runs in a new network namespace with only loopback, up: ``unshare -n``
    as root, ``unshare -rn`` (a user namespace too) otherwise. Raises :class:`NoNetworkNamespace`
    when the tools are missing or the kernel refuses (checked by running ``true`` that way)."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        raise NoNetworkNamespace("`unshare` and `ip` are needed (apt-get install util-linux iproute2)")
    flags = "-n" if os.geteuid() == 0 else "-rn"
    command = [unshare, flags, "sh", "-c", f'"{ip}" link set lo up && exec "$@"', "sh"]
    probe = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        raise NoNetworkNamespace(
            f"`unshare {flags}` is not permitted here ({probe.stderr.strip() or probe.returncode}): run as root, "
            "or enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; "
            "kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    return [*command, *argv]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _serve_cli() -> str:
    return str(Path(sys.executable).with_name("serve"))


@dataclass
class LocalRayCluster:
    """``nodes`` Ray nodes of ``cpus_per_node`` CPUs each, on 127.0.0.1 (all of them on 127.0.0.1 only in a
    namespace of :func:`in_own_network`)."""

    nodes: int = 2
    cpus_per_node: int = 1
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: socket paths
    processes: list[subprocess.Popen] = field(default_factory=list)
    gcs_port: int = 0
    http_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def url(self) -> str:
        """The Serve ingress (the head node's proxy)."""
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        # The nodes' workers import this checkout (PYTHONPATH first), score on one thread each.
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}

    def start(self, timeout: float = 90.0) -> LocalRayCluster:
        self.gcs_port, client_port, self.http_port = free_ports(3)
        for index in range(self.nodes):
            agent_grpc, agent_http, metrics, runtime_env = free_ports(4)
            command = [
                _ray_cli(), "start", "--block", "--disable-usage-stats", f"--num-cpus={self.cpus_per_node}",
                "--node-ip-address=127.0.0.1", f"--dashboard-agent-grpc-port={agent_grpc}",
                f"--dashboard-agent-listen-port={agent_http}", f"--metrics-export-port={metrics}",
                f"--runtime-env-agent-port={runtime_env}",
            ]  # fmt: skip
            if index == 0:
                command += ["--head", f"--port={self.gcs_port}", f"--ray-client-server-port={client_port}",
                            f"--temp-dir={self.temp_dir}", "--include-dashboard=false"]  # fmt: skip
            else:
                command += [f"--address={self.address}"]
            log = open(Path(self.temp_dir) / f"node{index}.log", "wb")  # noqa: SIM115 (the node outlives this call)
            self.processes.append(
                subprocess.Popen(command, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            if index == 0:
                self._wait_for_head(timeout)
        return self

    def _wait_for_head(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.processes[0].poll() is not None:
                raise RuntimeError(f"the Ray head node exited:\n{self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.gcs_port), timeout=1):
                return
            time.sleep(0.2)
        raise TimeoutError(f"the Ray head node was not up after {timeout:g} s:\n{self.log()}")

    def wait_for_nodes(self, timeout: float = 90.0) -> None:
        """Until every node is alive in the cluster (needs ``ray.init(address=self.address)`` first)."""
        import ray

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(node["Alive"] for node in ray.nodes()) >= self.nodes:
                return
            if any(process.poll() is not None for process in self.processes):
                raise RuntimeError(f"a Ray node exited:\n{self.log()}")
            time.sleep(0.25)
        raise TimeoutError(f"{self.nodes} Ray nodes were not alive after {timeout:g} s:\n{self.log()}")

    def deploy(self, config: dict[str, Any], timeout: float = 120.0) -> None:
        """``serve run --non-blocking`` of ``config`` (deploy/ray/reward-api.yaml's schema) on this
        cluster, its proxy on the head node at ``self.url``; returns once /readyz answers there."""
        path = Path(self.temp_dir) / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        done = subprocess.run(
            [_serve_cli(), "run", "--non-blocking", f"--address={self.address}", str(path)],
            env=self.env(), cwd=REPO_ROOT, timeout=timeout, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"serve run exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        wait_ready(self.url, timeout)

    def local_config(self, **autoscaling: Any) -> dict[str, Any]:
        """deploy/ray/reward-api.yaml as it runs here: one proxy (on the head: the nodes share one
        host, so one port), on 127.0.0.1 and a free port; ``autoscaling`` overrides the ingress's."""
        config = yaml.safe_load(CONFIG.read_text())
        config["proxy_location"] = "HeadOnly"
        config["http_options"].update(host="127.0.0.1", port=self.http_port)
        [application] = config["applications"]
        ingress = next(d for d in application["deployments"] if d["name"] == "RewardService")
        ingress["autoscaling_config"].update(autoscaling)
        return config

    def log(self) -> str:
        logs = sorted(Path(self.temp_dir).glob("node*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)

    def stop(self, timeout: float = 30.0) -> None:
        """Stops every node (workers included: each node's process group), then removes the temp dir."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of the group outlived SIGTERM
            process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
