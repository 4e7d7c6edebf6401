"""The simulator's RSQL filters: parsing, typed comparison, and the column fast path."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jamf.simulator.columns import compile_columns
from jamf.simulator.computers import FIELDS, ComputerGenerator
from jamf.simulator.fleet import Fleet
from jamf.simulator.rsql import (
    And,
    Comparison,
    Or,
    RsqlError,
    compile_filter,
    parse,
    predicate,
    selectors,
)


def computer(
    ident: int = 17,
    *,
    name: str = "Alice's MacBook Pro",
    managed: bool = True,
    report: str = "2026-11-20T10:00:00.123Z",
    serial: str = "C02ABCDEFGH1",
    version: str = "14.4.1",
    supplemental: str | None = None,
) -> dict[str, Any]:
    return {
        "id": str(ident),
        "general": {
            "name": name,
            "platform": "Mac",
            "reportDate": report,
            "remoteManagement": {"managed": managed},
        },
        "hardware": {"serialNumber": serial, "modelIdentifier": "MacBookPro18,3"},
        "operatingSystem": {"version": version, "supplementalBuildVersion": supplemental},
    }


def matches(text: str, record: dict[str, Any]) -> bool:
    return predicate(text, FIELDS)(record)


# -- parsing ---------------------------------------------------------------------------


def test_semicolon_binds_tighter_than_comma() -> None:
    tree = parse("id==1;id==2,id==3")
    assert tree == Or(
        (
            And((Comparison("id", "==", ("1",)), Comparison("id", "==", ("2",)))),
            Comparison("id", "==", ("3",)),
        )
    )


def test_parentheses_group_an_or_inside_an_and() -> None:
    tree = parse("general.platform==Mac;(id==1,id==2)")
    assert isinstance(tree, And)
    assert isinstance(tree.children[1], Or)


def test_operator_aliases_are_canonical() -> None:
    assert parse("id=gt=5") == Comparison("id", ">", ("5",))
    assert parse("id=le=5") == Comparison("id", "<=", ("5",))


def test_quoted_values_keep_reserved_characters_and_escapes() -> None:
    assert parse('general.name=="Bob\'s Mac; (old), \\"x\\""') == Comparison(
        "general.name", "==", ('Bob\'s Mac; (old), "x"',)
    )
    assert parse("general.name=='a=b'") == Comparison("general.name", "==", ("a=b",))


def test_in_and_out_take_lists() -> None:
    assert parse("id=in=(1, 2 ,3)") == Comparison("id", "=in=", ("1", "2", "3"))
    assert parse("id=out=4") == Comparison("id", "=out=", ("4",))


def test_whitespace_around_tokens_is_allowed() -> None:
    assert parse(" id == 1 ; id != 2 ") == And(
        (Comparison("id", "==", ("1",)), Comparison("id", "!=", ("2",)))
    )


def test_selectors_lists_every_field() -> None:
    tree = parse("id==1;(general.reportDate>2026-01-01,hardware.serialNumber==X)")
    assert selectors(tree) == {"id", "general.reportDate", "hardware.serialNumber"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the filter is empty"),
        ("id==", "expected a value"),
        ("id", "expected an operator"),
        ("id=like=3", "unknown operator '=like='"),
        ("==3", "expected a field name"),
        ("(id==1", "expected ')'"),
        ("id==1)", "unexpected ')'"),
        ("id==1;", "expected a field name"),
        ('general.name=="open', "unterminated quoted value"),
        ("id==(1,2)", "takes a single value"),
        ("id=in=(1,2", "expected ')' to close the list"),
    ],
)
def test_unreadable_filters_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(RsqlError, match="invalid filter") as error:
        parse(text)
    assert problem in str(error.value)


# -- compiling and matching ------------------------------------------------------------


def test_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(RsqlError, match="unknown field 'general.colour'"):
        predicate("general.colour==red", FIELDS)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("id==seventeen", "'seventeen' is not a valid integer for field 'id'"),
        ("general.remoteManagement.managed==yes", "not a valid boolean"),
        ("general.reportDate>last-week", "not a valid date-time"),
        ("general.remoteManagement.managed>true", "operator > does not apply"),
    ],
)
def test_values_of_the_wrong_type_are_refused(text: str, problem: str) -> None:
    with pytest.raises(RsqlError, match=problem):
        predicate(text, FIELDS)


def test_ids_compare_as_integers() -> None:
    assert matches("id>9", computer(17))  # as text, "17" < "9"
    assert matches("id=in=(3,17)", computer(17))
    assert not matches("id=out=(3,17)", computer(17))


def test_booleans_compare_as_booleans() -> None:
    assert matches("general.remoteManagement.managed==true", computer(managed=True))
    assert matches("general.remoteManagement.managed==FALSE", computer(managed=False))
    assert not matches("general.remoteManagement.managed!=true", computer(managed=True))


def test_dates_compare_as_points_in_time() -> None:
    record = computer(report="2026-11-20T10:00:00.123Z")
    assert matches("general.reportDate>=2026-11-20T10:00:00.123Z", record)
    assert matches("general.reportDate>2026-11-20T10:00:00Z", record)
    assert matches("general.reportDate<2026-11-20T11:00:00+01:00", record) is False
    assert matches("general.reportDate<2026-11-20T12:00:00+01:00", record)
    assert matches("general.reportDate>=2026-11-20", record)  # a bare date is midnight UTC
    assert not matches("general.reportDate>2026-11-21", record)


def test_text_compares_without_regard_to_case_and_with_wildcards() -> None:
    record = computer(serial="C02ABCDEFGH1", name="Alice's MacBook Pro")
    assert matches("hardware.serialNumber==c02abcdefgh1", record)
    assert matches("hardware.serialNumber==C02*", record)
    assert matches("general.name==*macbook*", record)
    assert matches("general.name=='Alice*Pro'", record)
    assert not matches("hardware.serialNumber==C07*", record)
    assert matches("hardware.serialNumber!=C07*", record)
    assert matches("operatingSystem.version>=14.4", computer(version="14.4.1"))


def test_a_missing_value_matches_only_inequality() -> None:
    record = computer(supplemental=None)
    assert not matches("operatingSystem.supplementalBuildVersion==23E224a", record)
    assert matches("operatingSystem.supplementalBuildVersion!=23E224a", record)
    assert not matches("operatingSystem.supplementalBuildVersion>a", record)
    assert matches("operatingSystem.supplementalBuildVersion=out=(a,b)", record)
    assert not matches("general.reportDate>2020-01-01", {"id": "1", "general": None})


def test_and_or_combine_as_written() -> None:
    record = computer(17, managed=True, serial="C02ABCDEFGH1")
    assert matches("general.remoteManagement.managed==true;hardware.serialNumber==C02*", record)
    assert not matches("general.remoteManagement.managed==false;id==17", record)
    assert matches("general.remoteManagement.managed==false,id==17", record)
    assert matches("id==1,id==2,(id>10;id<20)", record)


def test_compile_filter_takes_a_parsed_tree() -> None:
    test = compile_filter(parse("id==17"), FIELDS)
    assert test(computer(17))
    assert not test(computer(18))


# -- the column fast path agrees with the records --------------------------------------

REFERENCE = datetime(2026, 11, 26, tzinfo=UTC)
COLUMN_FILTERS = [
    "general.reportDate>=2026-11-20T00:00:00Z",
    "general.reportDate<2026-11-05T12:30:00.500Z",
    "general.remoteManagement.managed==false",
    "general.remoteManagement.managed==true;general.reportDate>2026-11-15",
    "id>150,general.remoteManagement.managed!=true",
    "id=in=(1,5,9);general.reportDate=out=(2026-11-20)",
]


@pytest.mark.parametrize("text", COLUMN_FILTERS)
def test_column_filters_agree_with_record_filters(text: str) -> None:
    generator = ComputerGenerator(seed=7, reference_time=REFERENCE)
    fleet = Fleet(generator, 300)
    columns = fleet._base_columns()
    fast = compile_columns(parse(text), FIELDS, columns, "id")
    slow = predicate(text, FIELDS)
    assert [i for i in range(1, 301) if fast(i)] == [
        i for i in range(1, 301) if slow(generator.record(i))
    ]


def test_fleet_query_on_columns_sees_changed_devices() -> None:
    now = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    fleet = Fleet(ComputerGenerator(seed=7, reference_time=REFERENCE), 300, clock=lambda: now)
    recent = "general.reportDate>=2026-11-26T00:00:00Z"
    assert list(fleet.query(recent, "id:asc")) == []
    fleet.change(42)
    added = fleet.add({"general": {"remoteManagement": {"managed": False}}})
    assert list(fleet.query(recent, "id:asc")) == [42, int(added["id"])]
    assert list(fleet.query(recent, "general.reportDate:desc,id:desc")) == [301, 42]
    unmanaged = fleet.query("general.remoteManagement.managed==false", "id:asc")
    expected = [i for i in fleet.live_ids() if not is_managed(fleet.get(i))]
    assert list(unmanaged) == expected
    assert int(added["id"]) in expected


def is_managed(record: dict[str, Any] | None) -> bool:
    return record is not None and record["general"]["remoteManagement"]["managed"]


# -- keyset reads: id bounds -----------------------------------------------------------

KEYSET_FILTERS = [
    "id>9",
    "id<=120",
    "id>9;id<=120",
    "(general.remoteManagement.managed==true);id>99;id<=250",
    "general.remoteManagement.managed==true;id>=100;id<251",
    "(general.remoteManagement.managed==true;id<=280);id>150",
    "(hardware.serialNumber==C02*);id>40;id<=90",
    "id>9;id<=5",
]


@pytest.mark.parametrize("text", KEYSET_FILTERS)
@pytest.mark.parametrize("sort", ["id:asc", "id:desc", "general.name:asc"])
def test_fleet_query_with_id_bounds_agrees_with_the_records(text: str, sort: str) -> None:
    # A keyset read's bounds cut a slice of the cached rest of the filter: the answer is
    # what the whole filter selects, compared as integers (id 100 is above id 99).
    generator = ComputerGenerator(seed=7, reference_time=REFERENCE)
    fleet = Fleet(generator, 300)
    for ident in (5, 50, 100, 101, 200):
        fleet.delete(ident)
    fleet.change(120, {"general": {"remoteManagement": {"managed": False}}})
    slow = predicate(text, FIELDS)
    unbounded = fleet.query("", sort)
    expected = [i for i in unbounded if slow(fleet.get(i) or {})]
    assert list(fleet.query(text, sort)) == expected


def test_id_bounds_compare_numerically_on_mobile_devices() -> None:
    from jamf.simulator.mobile import FIELDS as MOBILE_FIELDS
    from jamf.simulator.mobile import MobileDeviceGenerator

    fleet = Fleet(MobileDeviceGenerator(seed=7, reference_time=REFERENCE), 120)
    fleet.delete(100)
    ids = fleet.query("mobileDeviceId>9;mobileDeviceId<=101", "mobileDeviceId:asc")
    assert list(ids) == [i for i in range(10, 102) if i != 100]
    managed = fleet.query("managed==true;mobileDeviceId>95", "mobileDeviceId:desc")
    assert list(managed) == [
        i for i in range(120, 95, -1) if i != 100 and (fleet.get(i) or {})["general"]["managed"]
    ]
    assert predicate("mobileDeviceId>9", MOBILE_FIELDS)({"mobileDeviceId": "17"})


def test_a_bad_id_bound_is_refused_by_name() -> None:
    fleet = Fleet(ComputerGenerator(seed=7, reference_time=REFERENCE), 10)
    with pytest.raises(RsqlError, match="'x' is not a valid integer for field 'id'"):
        fleet.query("general.remoteManagement.managed==true;id>x", "id:asc")
