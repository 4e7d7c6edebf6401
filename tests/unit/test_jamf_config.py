from datetime import timedelta

import pytest

from inventory.errors import ConfigurationError
from jamf.config import DEFAULT_FILTER, InventorySpec, OnMissing, parse_source


def test_defaults_follow_the_reference_system() -> None:
    source = parse_source("jamf", None)
    [spec] = source.inventories
    assert source.name == "jamf"
    assert spec == InventorySpec()
    assert spec.filter_rsql == DEFAULT_FILTER == "general.remoteManagement.managed==true"
    assert (spec.sync_period_partial, spec.sync_period_full) == (
        timedelta(hours=6),
        timedelta(hours=24),
    )
    assert spec.on_missing is OnMissing.NOOP and spec.page_size == 500


def test_entries_are_parsed_and_found_by_name() -> None:
    source = parse_source(
        "jamf",
        [
            {
                "name": "macs",
                "sync_period_partial": "1h",
                "sync_period_full": "12h",
                "on_missing": "delete",
                "page_size": 1000,
            },
            {"name": "lab", "filter_rsql": "general.platform==Mac"},
        ],
    )
    macs = source.inventory("macs")
    assert macs.on_missing is OnMissing.DELETE and macs.page_size == 1000
    assert macs.sync_period_partial == timedelta(hours=1)
    assert source.inventory(None) is macs
    with pytest.raises(
        ConfigurationError, match="unknown Jamf inventory 'nope': configured are macs, lab"
    ):
        source.inventory("nope")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"sync_period_partial": "24h"},
            r"jamf_inventory\[0\]: sync_period_partial \(24h\) must be shorter than "
            r"sync_period_full \(24h\)",
        ),
        ({"sync_period_partial": "2d", "sync_period_full": "1d"}, "must be shorter"),
        (
            {"on_missing": "PURGE"},
            r"invalid jamf_inventory\[0\].on_missing 'PURGE': use NOOP or DELETE",
        ),
        ({"page_size": 5000}, r"jamf_inventory\[0\].page_size must be between 1 and 2000"),
        ({"sync_period_full": "soon"}, r"invalid jamf_inventory\[0\].sync_period_full 'soon'"),
        ({"colour": "blue"}, r"unknown setting jamf_inventory\[0\].colour"),
        ({"max_delete_share": 2}, "max_delete_share must be between 0 and 1"),
        ({"page_size": "many"}, r"invalid jamf_inventory\[0\]"),
    ],
)
def test_bad_entries_are_refused_at_start_naming_the_field(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_source("jamf", [entry])


def test_inventory_names_are_unique() -> None:
    with pytest.raises(ConfigurationError, match="two Jamf inventory entries are named 'a'"):
        parse_source("jamf", [{"name": "a"}, {"name": "a"}])
