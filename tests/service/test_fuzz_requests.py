"""Property-based fuzzing of the request path: any body gives JSON or a clear 4xx (no 500)."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from services.reward_api.app import resolve_defaults
from services.reward_api.routers.request_handling import RequestError, prepare_score, score_jobs
from services.reward_api.settings import Settings
from tests.engine.test_fuzz import ALL, FUZZ, completions, solutions

SETTINGS = Settings()
DEFAULTS = resolve_defaults(SETTINGS)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda samples, rewards, weights, explain: json.dumps(
        {"samples": samples, "rewards": rewards, "weights": weights, "explain": explain}).encode(),
        st.lists(st.fixed_dictionaries({"completion": completions(), "solution": solutions},
                                       optional={"id": st.one_of(st.integers(), st.text(max_size=5))}), max_size=3),
        st.one_of(st.none(), st.lists(st.sampled_from(ALL + ["odLength", "nope"]), max_size=3, unique=True)),
        st.one_of(st.none(), st.dictionaries(st.sampled_from(ALL), st.floats(allow_nan=False, allow_infinity=False))),
        st.booleans()),
)


@FUZZ
@given(bodies)
def test_the_score_endpoint_logic_answers_json_or_a_clear_4xx(body):
    try:
        [answer] = score_jobs([prepare_score(body, SETTINGS, DEFAULTS)])  # the endpoint's path, without the I/O
        if isinstance(answer, RequestError):
            raise answer
    except RequestError as exc:
        assert 400 <= exc.status_code < 500 and exc.detail
        return
    decoded = json.loads(answer)  # valid JSON, also for >64-bit ids and lone surrogates
    assert all(t is None or math.isfinite(t) for t in decoded["total"])


