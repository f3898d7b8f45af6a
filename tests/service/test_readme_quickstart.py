"""The README's example answers are what the service answers (the quickstart's example.json, the
/v1/evaluate example): the front door shows real numbers, and a change of any value fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_answer() -> dict:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("curl -s localhost:8000/v1/score -d @example.json"):]
    block = re.search(r"```json\n(.*?)\n```", quickstart, re.DOTALL).group(1)
    return json.loads(block.replace(", ...}", "}"))  # the README elides most of "versions"


def test_the_readme_shows_what_the_service_answers_for_example_json(client):
    answer = client.post("/v1/score", content=(ROOT / "example.json").read_bytes(),
                         headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    body, shown = answer.json(), readme_answer()
    assert shown["rewards"] == body["rewards"]
    assert shown["total"] == body["total"]
    assert shown["versions"].items() <= body["versions"].items()
    assert (shown["errors"], shown["ids"], shown["details"]) == (body["errors"], body["ids"], body["details"])


def test_the_readme_evaluate_example_is_what_the_service_answers(client):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### POST /v1/evaluate"):]
    request, response = re.findall(r"```json\n(.*?)\n```", section, re.DOTALL)[:2]
    answer = client.post("/v1/evaluate", content=request.encode(), headers={"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == json.loads(response)
