"""The README's OpenRLHF recipe against OpenRLHF 0.11.2's own command line: every flag it uses is one
that ``openrlhf.cli.train_ppo_ray`` defines (its parser is built under ``__main__`` next to imports
that need GPUs, so its ``add_argument`` calls are read from the installed source)."""

from __future__ import annotations

import ast
import importlib.util
import re

import pytest

from services.reward_api.local import REPO_ROOT


def openrlhf_flags() -> set[str]:
    spec = importlib.util.find_spec("openrlhf.cli.train_ppo_ray")
    if spec is None or spec.origin is None:
        pytest.skip("pip install the 'integrations' extra (README)")
    tree = ast.parse(open(spec.origin).read())
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
            and node.args and isinstance(node.args[0], ast.Constant)}


def readme_section(title: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    return text.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def test_readme_openrlhf_flags_exist_in_the_pinned_release():
    section = readme_section("OpenRLHF")
    command = section.split("```bash", 1)[1].split("```", 1)[0]
    current = [line for line in command.splitlines() if not line.lstrip().startswith("#")]
    used = set(re.findall(r"(--[\w.]+)", "\n".join(current))) - {"--host", "--port", "--workers"}
    prose = set(re.findall(r"`(--algo\.[\w.]+)", section))
    assert {"--reward.remote_url", "--data.label_key"} <= used and prose
    assert (used | prose) <= openrlhf_flags(), (used | prose) - openrlhf_flags()
    assert not {"--remote_rm_url", "--label_key"} & openrlhf_flags()  # the old names, kept as a comment only
