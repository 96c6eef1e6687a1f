"""The fast JSON codec gives exactly what the standard library gives."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import jsoncodec

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_round_trip_equals_the_standard_library(value: Any) -> None:
    text = json.dumps(value)
    assert jsoncodec.loads(text) == json.loads(text)
    assert json.loads(jsoncodec.dumps(value)) == json.loads(text)


@pytest.mark.parametrize("number", [2**63, 2**64 + 1, -(2**70), 10**30])
def test_integers_beyond_64_bits_survive_both_ways(number: int) -> None:
    assert jsoncodec.loads(json.dumps({"n": number})) == {"n": number}
    assert json.loads(jsoncodec.dumps({"n": number})) == {"n": number}
