"""The raw MDM record as stored: compact JSON, never over its cap, never broken."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from inventory.serialize import TRUNCATED, capped_raw, pretty_raw, raw_record_text

_json: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)


@given(record=_json, limit=st.integers(min_value=1, max_value=600))
def test_any_record_is_stored_as_valid_json_within_the_limit(record: Any, limit: int) -> None:
    text = raw_record_text(record, limit=limit)

    kept = json.loads(text)  # never broken
    fits = len(json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()) <= limit
    if fits:
        assert kept == record
    else:
        assert TRUNCATED in kept
        # Only a limit too small for the marker itself breaks the bound.
        assert len(text.encode()) <= limit or kept == {
            TRUNCATED: {"bytes": kept[TRUNCATED]["bytes"], "limit": limit}
        }


def test_the_largest_sections_go_first_and_the_ids_stay() -> None:
    record = {
        "id": "7",
        "udid": "U-7",
        "general": {"name": "Lab Mac"},
        "applications": [{"name": f"App {n}"} for n in range(200)],
        "localUserAccounts": [{"username": f"s{n}"} for n in range(100)],
    }

    kept = json.loads(raw_record_text(record, limit=3000))

    assert kept[TRUNCATED]["sections_left_out"] == ["applications"]
    assert (kept["id"], kept["udid"], kept["general"]) == ("7", "U-7", {"name": "Lab Mac"})
    assert len(kept["localUserAccounts"]) == 100  # kept whole: never cut inside a section


def test_unicode_counts_in_bytes_and_prints_readably() -> None:
    record = {"id": "1", "general": {"name": "Zoë Åström MacBook"}}
    text = raw_record_text(record)

    assert "Zoë Åström" in text and "Zoë Åström" in pretty_raw(text)
    assert pretty_raw(text).splitlines()[1] == '  "id": "1",'


@given(record=_json, limit=st.integers(min_value=1, max_value=600))
def test_an_encoded_record_is_capped_the_same_way(record: Any, limit: int) -> None:
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)

    assert json.loads(capped_raw(text, limit)) == json.loads(raw_record_text(record, limit))
