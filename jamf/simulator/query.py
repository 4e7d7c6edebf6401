"""Reading the query parameters of an inventory request: paging, sections, sort.

Each problem raises ``QueryError`` carrying the Jamf-style error code and the parameter
it concerns, which the server turns into a 400.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .rsql import Field

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 2000


class QueryError(ValueError):
    def __init__(self, message: str, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True, slots=True)
class SortKey:
    name: str
    field: Field
    descending: bool


def parse_sort(text: str, fields: Mapping[str, Field]) -> tuple[SortKey, ...]:
    """``id:asc,general.reportDate:desc`` -> keys, most significant first."""
    keys: list[SortKey] = []
    for part in text.split(","):
        name, _, direction = part.strip().partition(":")
        name, direction = name.strip(), (direction.strip().lower() or "asc")
        if not name:
            raise QueryError(f"invalid sort {text!r}: empty sort key", "INVALID_SORT", "sort")
        field = fields.get(name)
        if field is None:
            raise QueryError(f"invalid sort: unknown field {name!r}", "INVALID_SORT", "sort")
        if direction not in ("asc", "desc"):
            raise QueryError(
                f"invalid sort: direction {direction!r} is neither asc nor desc",
                "INVALID_SORT",
                "sort",
            )
        keys.append(SortKey(name, field, direction == "desc"))
    return tuple(keys)


def parse_sections(
    values: Iterable[str], allowed: frozenset[str], default: frozenset[str]
) -> frozenset[str]:
    """Repeated ``section`` parameters (commas also accepted); ``default`` when none is given.

    Only the sections asked for come back, GENERAL included: Jamf sends GENERAL alone
    when no section is asked for, and not at all when others are and it is not.
    """
    wanted = {v.strip().upper() for value in values for v in value.split(",") if v.strip()}
    unknown = sorted(wanted - allowed)
    if unknown:
        raise QueryError(f"unknown section {unknown[0]!r}", "INVALID_SECTION", "section")
    return frozenset(wanted) if wanted else default


def parse_paging(page: str | None, page_size: str | None) -> tuple[int, int]:
    """``page`` counts from 0; ``page-size`` is 1 to 2000, 100 when left out."""
    number = _integer(page, 0, "page")
    size = _integer(page_size, DEFAULT_PAGE_SIZE, "page-size")
    if number < 0:
        raise QueryError(f"page must be 0 or more, not {number}", "INVALID_PAGE", "page")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise QueryError(
            f"page-size must be between 1 and {MAX_PAGE_SIZE}, not {size}",
            "INVALID_PAGE_SIZE",
            "page-size",
        )
    return number, size


def _integer(text: str | None, default: int, name: str) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        message = f"{name} must be an integer, not {text!r}"
        raise QueryError(message, "INVALID_PARAMETER", name) from None
