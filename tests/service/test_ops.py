"""Catalogue, probes, metrics, the bearer token, and settings that must fail at startup."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from services.reward_api.local import REPO_ROOT

from .conftest import TOKEN
from .test_score import CAT, completion, solution

SEVEN = {"format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"}


def test_catalogue(client):
    answer = client.get("/v1/rewards")
    assert answer.status_code == 200
    body = answer.json()
    names = {entry["name"] for entry in body["rewards"]}
    assert SEVEN <= names
    assert body["defaults"]["rewards"] == ["format", "od_length", "ap"]
    assert body["defaults"]["weights"] == {"format": 1.0, "od_length": 1.0, "ap": 0.0}
    assert body["defaults"]["versions"] == {"format": "2", "od_length": "2", "ap": "2"}


def test_catalogue_serves_every_departure_with_its_example(client):
    from services.reward_api.engine.departures import DEPARTURES

    entries = {entry["name"]: entry for entry in client.get("/v1/rewards").json()["rewards"]}
    served = {(name, version, d["id"]): d for name, entry in entries.items()
              for version, spec in entry["versions"].items() for d in spec["departures"]}
    for departure in DEPARTURES:
        for name in departure.rewards:
            for version in departure.versions:
                row = served[(name, version, departure.id)]
                assert row["example"] == departure.shown and row["our_values"] == dict(departure.our_values)
    assert entries["cosine"]["default_version"] == "2" and entries["cosine"]["departures"] == \
        entries["cosine"]["versions"]["2"]["departures"]


def test_probes_are_open(server):
    healthz = httpx.get(server.url + "/healthz")
    assert healthz.status_code == 200 and healthz.json()["status"] == "ok"
    readyz = httpx.get(server.url + "/readyz")
    assert readyz.status_code == 200, readyz.text
    assert readyz.json()["workers"] == {"expected": 1, "started": 1}


def test_metrics_count_what_was_scored(client, server):
    def samples_seen() -> float:
        text = httpx.get(server.url + "/metrics").text
        for line in text.splitlines():
            if line.startswith('reward_api_samples_total{endpoint="/v1/score"}'):
                return float(line.split()[-1])
        return 0.0

    before = samples_seen()
    sample = {"completion": completion([CAT]), "solution": solution([CAT])}
    assert client.post("/v1/score", json={"samples": [sample] * 5, "rewards": ["ap"]}).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    assert samples_seen() == before + 5
    assert 'reward_api_requests_total{endpoint="/v1/score",status="200"}' in text
    assert 'reward_api_reward_value_bucket{le="1.0",reward="ap"}' in text
    assert "reward_api_predicted_boxes_bucket" in text
    assert "reward_api_request_duration_seconds_bucket" in text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                                     {"Authorization": f"Basic {TOKEN}"}])
@pytest.mark.parametrize("method, path", [("GET", "/v1/rewards"), ("POST", "/v1/score"), ("POST", "/v1/openrlhf")])
def test_token_required_on_v1(server, headers, method, path):
    answer = httpx.request(method, server.url + path, headers=headers, json={"samples": []})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "token" in answer.json()["detail"]


def test_right_token_accepted(server):
    answer = httpx.get(server.url + "/v1/rewards", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200


def test_unknown_path_is_json_404(server):
    answer = httpx.get(server.url + "/nope")
    assert answer.status_code == 404 and answer.json()["detail"]


@pytest.mark.parametrize("env, message", [
    ({"REWARD_API_MAX_SAMPLES": "many"}, "REWARD_API_MAX_SAMPLES (--max-samples): Input should be a valid integer"),
    ({"REWARD_API_LOG_LEVEL": "loud"}, "REWARD_API_LOG_LEVEL"),
    ({"REWARD_API_WORKERS": "0"}, "REWARD_API_WORKERS"),
    ({"REWARD_API_DEFAULT_REWARDS": "format,nope"}, "nope"),
    ({"REWARD_API_DEFAULT_WEIGHTS": "repetition=1"}, "DEFAULT_WEIGHTS"),
    ({"REWARD_API_DEFAULT_WEIGHTS": "format=heavy"}, "DEFAULT_WEIGHTS"),
])
def test_invalid_settings_fail_at_startup(env, message):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD_API_")} | env
    done = subprocess.run([sys.executable, "-m", "services.reward_api", "--port", "1"], cwd=REPO_ROOT,
                          env=full_env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "invalid settings" in done.stderr and message in done.stderr, done.stderr


def test_unexpected_exception_is_a_logged_json_500(caplog):
    # In-process: a real server offers no route that fails on purpose, so one is added to an app here.
    import asyncio

    from services.reward_api.app import create_app
    from services.reward_api.settings import Settings

    app = create_app(Settings())

    @app.get("/boom")
    async def boom():
        raise RuntimeError("secret internals")

    async def get():
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/boom")

    answer = asyncio.run(get())
    assert answer.status_code == 500
    assert answer.json() == {"detail": "internal error: RuntimeError"}  # no internals leak
    assert "secret internals" in caplog.text


def test_every_setting_has_a_flag_that_beats_its_variable():
    from services.reward_api.settings import parse_cli

    env = {"REWARD_API_MAX_SAMPLES": "10", "REWARD_API_TOKEN": "from-env"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        settings = parse_cli(["--max-samples", "7", "--default-rewards", "format,ap", "--default-weights",
                              "format=2", "--max-body-bytes", "4096", "--max-queued-samples", "3",
                              "--retry-after-seconds", "5", "--log-level", "warning"])
    assert settings.max_samples == 7 and settings.token == "from-env"
    assert settings.default_rewards == ("format", "ap") and settings.weights == {"format": 2.0, "ap": 1.0}
    assert (settings.max_body_bytes, settings.max_queued_samples, settings.retry_after_seconds) == (4096, 3, 5)
    assert settings.log_level == "warning"


def test_a_bad_flag_names_itself():
    done = subprocess.run([sys.executable, "-m", "services.reward_api", "--max-samples", "many"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "(--max-samples): Input should be a valid integer" in done.stderr, done.stderr


def test_the_readmes_settings_table_is_the_settings_model():
    from services.reward_api.settings import markdown_table

    readme = (REPO_ROOT / "README.md").read_text()
    assert markdown_table() in readme, "README's settings table differs from settings.markdown_table(): paste it"


def test_the_bearer_scheme_is_in_the_openapi_document():
    from services.reward_api.app import create_app
    from services.reward_api.settings import Settings

    document = create_app(Settings()).openapi()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert document["paths"]["/v1/score"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in document["paths"]["/healthz"]["get"]  # probes stay open
