"""Registry: names, aliases, pinned versions, parameters, and the catalogue."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from services.reward_api.engine import registry
from services.reward_api.engine.registry import (
    DuplicateReward,
    ParamsError,
    UnknownReward,
    UnknownVersion,
    catalogue,
    resolve_rewards,
    validate_params,
)


def test_names_and_aliases_resolve_to_canonical_names():
    resolved = resolve_rewards(["format", "odLength", "od_ap", "od_ap50", "length", {"name": "weighted_sum"}, "repetition"])
    assert [r.name for r in resolved] == ["format", "od_length", "ap", "ap50", "cosine", "weighted_sum", "repetition"]
    assert all(r.version == "2" for r in resolved)  # version 2 is the default (issue 10)
    assert resolved[1].requested_as == "odLength"
    assert [r.needs_completion_tokens for r in resolved] == [False, False, False, False, True, False, False]


def test_pinned_version():
    (r,) = resolve_rewards([{"name": "ap", "version": "1"}])
    assert (r.name, r.version) == ("ap", "1")
    (r,) = resolve_rewards([{"name": "ap", "version": "2"}])
    assert (r.name, r.version) == ("ap", "2")
    assert registry.REWARDS["ap"]["1"].compute is not registry.REWARDS["ap"]["2"].compute


@pytest.mark.parametrize(
    "refs, error, fragment",
    [
        (["format", "fromat"], UnknownReward, "rewards[1]: unknown reward 'fromat'"),
        ([{"name": "nope"}], UnknownReward, "rewards[0].name: unknown reward"),
        ([{"name": "ap", "version": "3"}], UnknownVersion, "rewards[0].version: ap has no version '3'; this server serves '1', '2'"),
        ([{"name": "ap", "version": 1}], UnknownVersion, "rewards[0].version"),
        ([{"version": "1"}], UnknownReward, "rewards[0].name: missing"),
        ([{"name": "ap", "weight": 2}], UnknownReward, "rewards[0].weight"),
        ([3], UnknownReward, "rewards[0]:"),
        (["ap", "od_ap"], DuplicateReward, "rewards[1]: ap is already requested at rewards[0]"),
        (["length", {"name": "cosine", "version": "1"}], DuplicateReward, "rewards[1]"),
    ],
)
def test_resolution_errors_name_the_field(refs, error, fragment):
    with pytest.raises(error) as caught:
        resolve_rewards(refs)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_versions_map_to_implementations(monkeypatch):
    v1, v2 = registry.REWARDS["weighted_sum"]["1"], registry.REWARDS["weighted_sum"]["2"]
    v3 = replace(v2, version="3", description="a later arithmetic", compute=lambda inp: 0.123)
    monkeypatch.setitem(registry.REWARDS, "weighted_sum", {"1": v1, "2": v2, "3": v3})
    pinned, latest = resolve_rewards([{"name": "weighted_sum", "version": "1"}]), resolve_rewards([{"name": "weighted_sum", "version": "3"}])
    assert pinned[0].spec is v1 and latest[0].spec is v3
    assert latest[0].compute(None) == 0.123
    assert resolve_rewards(["weighted_sum"])[0].version == "2"  # the default version stays
    (entry,) = [e for e in catalogue() if e["name"] == "weighted_sum"]
    assert sorted(entry["versions"]) == ["1", "2", "3"]


def test_params_defaults():
    params = validate_params({}, resolve_rewards(["weighted_sum", "cosine", "ap"]))
    assert params == {
        "weighted_sum": {"alpha": 0.7, "beta": 0.0, "gamma": 0.3, "iou_threshold": 0.5},
        "cosine": {"max_length": 1024, "correct_threshold": 0.7},
    }
    # cosine reads weighted_sum's parameters, so they are there when only cosine is asked for
    assert set(validate_params(None, resolve_rewards(["cosine"]))) == {"cosine", "weighted_sum"}


def test_params_given_are_merged_and_aliases_accepted():
    params = validate_params({"weighted_sum": {"beta": 1}, "length": {"max_length": 512}}, resolve_rewards(["cosine"]))
    assert params["weighted_sum"] == {"alpha": 0.7, "beta": 1, "gamma": 0.3, "iou_threshold": 0.5}
    assert params["cosine"]["max_length"] == 512
    assert validate_params(params, resolve_rewards(["cosine"])) == params  # idempotent


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"weighted_sum": {"alpha": -0.1}}, "params.weighted_sum.alpha: must be >= 0"),
        ({"weighted_sum": {"alpha": 0, "beta": 0, "gamma": 0}}, "params.weighted_sum: alpha + beta + gamma must be positive"),
        ({"weighted_sum": {"iou_threshold": 0}}, "params.weighted_sum.iou_threshold: must be in (0, 1]"),
        ({"weighted_sum": {"iou_threshold": 1.5}}, "iou_threshold: must be in (0, 1]"),
        ({"weighted_sum": {"delta": 1}}, "params.weighted_sum.delta: unknown parameter"),
        ({"weighted_sum": {"alpha": True}}, "params.weighted_sum.alpha: must be a finite number"),
        ({"weighted_sum": {"alpha": float("nan")}}, "must be a finite number"),
        ({"weighted_sum": {"alpha": float("inf")}}, "must be a finite number"),
        ({"weighted_sum": 3}, "params.weighted_sum: must be an object"),
        ({"cosine": {"max_length": 0}}, "params.cosine.max_length: must be > 0"),
        ({"length": {"correct_threshold": 2}}, "params.length.correct_threshold: must be in [0, 1]"),
        ({"cosine": {}, "length": {}}, "params.length: parameters of cosine are given twice"),
        ({"wsum": {}}, "params.wsum: unknown reward"),
        ({"format": {"strict": 1}}, "params.format.strict: unknown parameter; format takes no parameters"),
        ([1], "params: must be an object"),
    ],
)
def test_params_errors_name_the_field(params, fragment):
    with pytest.raises(ParamsError) as caught:
        validate_params(params, resolve_rewards(["weighted_sum", "cosine"]))
    assert fragment in str(caught.value)


SPEC_DEPARTURES = {  # the ids of every version 2 departure, per reward
    "format": ["unreadable_solution"],
    "ap": ["nan_boxes", "inverted_boxes", "malformed_boxes", "five_numbers_or_booleans", "huge_coordinate",
           "solution_answer_block", "unreadable_solution"],
    "od_length": ["nan_boxes", "inverted_boxes", "malformed_boxes", "five_numbers_or_booleans", "huge_coordinate",
                  "solution_answer_block", "unreadable_solution"],
    "cosine": ["unreadable_solution", "missing_label", "cosine_accuracy", "cosine_clamp"],
    "weighted_sum": ["five_numbers_or_booleans", "unreadable_solution", "missing_label"],
    "repetition": ["unreadable_solution", "non_object_items", "unparsable_numbers", "repair_beyond_cut_lists"],
}


def test_catalogue_describes_every_reward_and_departure():
    entries = catalogue()
    json.dumps(entries)  # JSON-ready
    by_name = {e["name"]: e for e in entries}
    assert set(by_name) == {"format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"}
    assert by_name["od_length"]["aliases"] == ["odLength"]
    assert by_name["ap"]["aliases"] == ["od_ap"] and by_name["ap50"]["aliases"] == ["od_ap50"]
    assert by_name["cosine"]["aliases"] == ["length"]
    assert by_name["cosine"]["needs_completion_tokens"] and not by_name["ap"]["needs_completion_tokens"]
    assert by_name["weighted_sum"]["params"]["gamma"]["default"] == 0.3
    assert by_name["cosine"]["params"]["max_length"]["default"] == 1024
    assert by_name["cosine"]["uses_params_of"] == ["weighted_sum"]
    for name, ids in SPEC_DEPARTURES.items():
        assert [d["id"] for d in by_name[name]["departures"]] == ids, name
    assert by_name["ap50"]["departures"] == by_name["ap"]["departures"]
    for entry in entries:
        assert entry["description"] and "\n" not in entry["description"]
        assert entry["default_version"] == "2" and set(entry["versions"]) == {"1", "2"}
        for departure in entry["departures"]:
            assert set(departure) == {"id", "versions", "reference", "here", "why", "example", "reference_values",
                                      "our_values"}
            assert entry["name"] in departure["our_values"] and "2" in departure["versions"]
    # version 1 lists its misreadings too, each mended in version 2
    v1_ids = {d["id"] for e in entries for d in e["versions"]["1"]["departures"]}
    assert {"v1_cosine_wrong_direction", "v1_not_a_list", "v1_upper_case_answer", "v1_empty_fence",
            "v1_repair_cap"} <= v1_ids
    assert "repair_beyond_cut_lists" not in v1_ids


def test_a_parameter_too_large_for_a_double_is_a_params_error_not_a_crash():
    rewards = registry.resolve_rewards(["weighted_sum"])
    with pytest.raises(registry.ParamsError, match="alpha"):
        registry.validate_params({"weighted_sum": {"alpha": 10**400}}, rewards)
