"""Every departure from the reference: its example gives the values it states, in every version
it names; version 2 gives the reference's value on every misreading of version 1; the README, the
spec and GET /v1/rewards carry the one table."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.reward_api.engine import registry
from services.reward_api.engine.departures import DEPARTURES, REWARD_NAMES, markdown_table
from services.reward_api.engine.scoring import score_batch

ROOT = Path(__file__).resolve().parents[2]


def scored(example: dict, version: str) -> dict:
    scores = score_batch([example], [{"name": name, "version": version} for name in REWARD_NAMES])
    return {name: scores.values[name][0] for name in REWARD_NAMES}


@pytest.mark.parametrize("departure", DEPARTURES, ids=lambda d: d.id)
def test_each_example_gives_our_stated_values_in_each_version(departure):
    assert departure.rewards and set(departure.reference_values) == set(departure.our_values)
    for version in departure.versions:
        values = scored(dict(departure.example), version)
        for name, ours in departure.our_values.items():
            if ours is None:
                assert values[name] is None, (departure.id, version, name)
            else:
                assert values[name] == pytest.approx(ours, abs=1e-12), (departure.id, version, name, values[name])
        for name, reference in departure.reference_values.items():
            assert reference != departure.our_values[name], "not a departure when the values agree"


@pytest.mark.parametrize("departure", [d for d in DEPARTURES if d.versions == ("1",)], ids=lambda d: d.id)
def test_version_2_gives_the_reference_value_where_version_1_misread_it(departure):
    values = scored(dict(departure.example), "2")
    for name, reference in departure.reference_values.items():
        expected = float(reference.split()[0]) if isinstance(reference, str) else reference
        assert values[name] == pytest.approx(expected, abs=1e-12), (departure.id, name)


def test_every_departure_is_served_by_the_versions_it_names():
    for departure in DEPARTURES:
        for name in departure.rewards:
            for version, spec in registry.REWARDS[name].items():
                assert (departure in spec.departures) == (version in departure.versions), (departure.id, name, version)


@pytest.mark.parametrize("path", ["README.md", "docs/reward-spec.md"])
def test_the_docs_hold_the_one_departures_table(path):
    assert markdown_table() in (ROOT / path).read_text(encoding="utf-8"), (
        f"{path}'s departures table differs from engine/departures.py: paste markdown_table() there")
