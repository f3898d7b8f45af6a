"""The client's runnable examples (its docstrings' ``>>>`` lines), run against the real service."""

from __future__ import annotations

import doctest

import shared.client

BOX = '[{"bbox_2d": [10, 20, 110, 220], "label": "cat"}]'


def test_the_clients_examples_run_as_written(service):
    globs = {
        "url": service.url,
        "completion": f"<think>one cat</think><answer>```json\n{BOX}\n```</answer>",
        "solution": f"<answer>```json\n{BOX}\n```</answer>",
    }
    result = doctest.testmod(shared.client, extraglobs=globs, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted >= 8, "the client's main calls lost their examples"
    assert result.failed == 0, f"{result.failed} of the client's examples fail (see the output above)"
