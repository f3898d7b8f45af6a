"""Property-based fuzzing of the client's answer reader: only answers inside the contract pass."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.client import response_reader
from tests.engine.test_fuzz import FUZZ

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
GOOD = {"rewards": {"ap": [0.5]}, "total": [0.5], "versions": {"ap": "1"}, "errors": [None], "ids": [None]}
# Near-misses of a good answer: one field replaced by any JSON value.
NEAR = st.builds(lambda key, value: {**GOOD, key: value}, st.sampled_from(sorted(GOOD)), JSON_VALUES)


@FUZZ
@given(st.one_of(JSON_VALUES, NEAR))
def test_the_client_returns_only_answers_inside_the_contract(body):
    read = response_reader(1, ["ap"])
    try:
        answer = read(body)
    except (ValueError, TypeError):
        return
    assert len(answer.total) == 1 and "ap" in answer.rewards
    assert all(isinstance(v, float) and v == v and abs(v) != float("inf") for v in answer.total + answer.rewards["ap"]
               if v is not None)
