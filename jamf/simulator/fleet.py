"""A fleet of simulated devices: generated on demand, with small overlays for mutations.

Record ``i`` is a pure function of (seed, i); the fleet keeps only what tests changed:
the ids deleted, per-device overrides (deep-merged over the generated record) and a
revision counter per changed device. Every mutation bumps ``version``, which invalidates
the cached, sorted id lists of the filtered queries, so a page request evaluates its
filter over the fleet once per (filter, sort) and mutation, not once per page.
"""

from __future__ import annotations

import bisect
import copy
import threading
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Protocol

from . import rsql
from .columns import compile_columns, record_column_value
from .query import SortKey, parse_sort
from .rsql import Field

Record = dict[str, Any]
_CACHE_ENTRIES = 16


class Generator(Protocol):
    """What a kind of device (computer, mobile device) must provide to make a fleet."""

    @property
    def kind(self) -> str: ...
    @property
    def os_type(self) -> str: ...
    @property
    def id_key(self) -> str: ...
    @property
    def default_sort(self) -> str: ...
    @property
    def fields(self) -> Mapping[str, Field]: ...
    @property
    def core_fields(self) -> frozenset[str]: ...
    @property
    def sections(self) -> frozenset[str]: ...
    @property
    def default_sections(self) -> frozenset[str]: ...
    @property
    def column_fields(self) -> tuple[str, ...]: ...

    def column_values(self, ident: int) -> tuple[int, ...]: ...

    def core(self, ident: int) -> Record: ...
    def record(self, ident: int) -> Record: ...
    def added(self, ident: int, now: datetime) -> Record: ...
    def changed(
        self, ident: int, revision: int, record: Mapping[str, Any], now: datetime
    ) -> Record: ...
    def summary(self, record: Mapping[str, Any]) -> Record: ...
    def project(self, record: Mapping[str, Any], sections: frozenset[str]) -> Record: ...


def apply(base: Record, overrides: Mapping[str, Any]) -> Record:
    """Deep-merge ``overrides`` into ``base`` in place; returns ``base``."""
    for key, value in overrides.items():
        current = base.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            apply(current, value)
        else:
            base[key] = copy.deepcopy(value) if isinstance(value, dict | list) else value
    return base


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Record:
    """A new dict: ``base`` deep-merged with ``overrides``; neither is modified."""
    return apply(copy.deepcopy(dict(base)), overrides)


class Fleet:
    """Live devices are ids 1..next_id-1 minus the deleted ones; new ids are never reused."""

    def __init__(
        self,
        generator: Generator,
        size: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.generator = generator
        self.size = size
        self._clock = clock
        self._lock = threading.RLock()
        self._next_id = size + 1
        self._deleted: set[int] = set()
        self._overrides: dict[int, Record] = {}
        self._revisions: dict[int, int] = {}
        self._live: tuple[int, Sequence[int]] | None = None
        self._queries: OrderedDict[tuple[rsql.Node | None, str], tuple[int, Sequence[int]]] = (
            OrderedDict()
        )
        self._columns: dict[str, array[int]] | None = None
        self.version = 0

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._next_id - 1 - len(self._deleted)

    def exists(self, ident: int) -> bool:
        return 1 <= ident < self._next_id and ident not in self._deleted

    def get(self, ident: int) -> Record | None:
        """The full record, or None when there is no such device."""
        with self._lock:
            if not self.exists(ident):
                return None
            overrides = self._overrides.get(ident)
        record = self.generator.record(ident)
        return apply(record, overrides) if overrides else record

    def revision(self, ident: int) -> int:
        return self._revisions.get(ident, 0)

    def live_ids(self) -> Sequence[int]:
        """Every current id, ascending: a range while nothing was deleted, else an array."""
        with self._lock:
            if not self._deleted:
                return range(1, self._next_id)
            if self._live is None or self._live[0] != self.version:
                ids = array("q", (i for i in range(1, self._next_id) if i not in self._deleted))
                self._live = (self.version, ids)
            return self._live[1]

    def summaries(self) -> Iterator[Record]:
        """``generator.summary`` of every current device, in id order (for /_sim/fleet)."""
        for ident in self.live_ids():
            view = self._view(ident, core=True)
            if view is not None:
                yield self.generator.summary(view)

    def query(self, filter_text: str, sort_text: str) -> Sequence[int]:
        """Ids matching the RSQL filter, in sort order (id ascending breaks ties).

        Bounds on the id joined to the rest with ``;`` (``(...);id>500;id<=1000``, what a
        keyset read sends, a new one each page) do not make a query of their own: the
        rest is evaluated (and cached) once, and the bounds cut a slice of its answer,
        as a database answers such a read from its primary key's index.

        Raises ``rsql.RsqlError`` or ``query.QueryError`` for a filter or sort it cannot use.
        """
        sort_text = sort_text.strip() or self.generator.default_sort
        keys = parse_sort(sort_text, self.generator.fields)
        node = rsql.parse(filter_text) if filter_text.strip() else None
        rest, low, high = id_bounds(node, self.generator.id_key)
        if low is None and high is None:
            return self._cached(node, sort_text, keys)
        ids = self._cached(rest, sort_text, keys)
        return _within(ids, keys, self.generator.id_key, low, high)

    def _cached(
        self, node: rsql.Node | None, sort_text: str, keys: tuple[SortKey, ...]
    ) -> Sequence[int]:
        key = (node, sort_text)
        with self._lock:
            cached = self._queries.get(key)
            if cached is not None and cached[0] == self.version:
                self._queries.move_to_end(key)
                return cached[1]
            version = self.version
            ids = self._evaluate(node, keys)
            self._queries[key] = (version, ids)
            self._queries.move_to_end(key)
            while len(self._queries) > _CACHE_ENTRIES:
                self._queries.popitem(last=False)
            return ids

    def _evaluate(self, node: rsql.Node | None, keys: tuple[SortKey, ...]) -> Sequence[int]:
        generator = self.generator
        fields = generator.fields
        test = rsql.compile_filter(node, fields) if node is not None else None
        live = self.live_ids()
        if test is None and len(keys) == 1 and keys[0].name == generator.id_key:
            return live if not keys[0].descending else live[::-1]
        needed = {k.name for k in keys} | (rsql.selectors(node) if node is not None else set())
        if node is not None and needed <= {generator.id_key, *generator.column_fields}:
            rows = self._rows_from_columns(live, node, keys)
        else:
            core = needed <= generator.core_fields
            rows = []
            for ident in live:
                view = self._view(ident, core=core)
                if view is None or (test is not None and not test(view)):
                    continue
                rows.append((ident, *(_sort_value(view, k) for k in keys)))
        for n in range(len(keys), 0, -1):
            rows.sort(key=itemgetter(n), reverse=keys[n - 1].descending)
        return array("q", (row[0] for row in rows))

    def _rows_from_columns(
        self, live: Sequence[int], node: rsql.Node, keys: tuple[SortKey, ...]
    ) -> list[tuple[Any, ...]]:
        """Filter on base-value columns; devices with overrides are read as records."""
        generator = self.generator
        columns = self._base_columns()
        fast = compile_columns(node, generator.fields, columns, generator.id_key)
        slow = rsql.compile_filter(node, generator.fields)
        getters = [_column_getter(k.name, columns, generator.id_key) for k in keys]
        rows: list[tuple[Any, ...]] = []
        overridden = self._overrides
        for ident in live:
            if ident in overridden:
                view = self._view(ident, core=True)
                if view is not None and slow(view):
                    values = (record_column_value(view, k.field) for k in keys)
                    rows.append((ident, *((v is not None, v or 0) for v in values)))
            elif fast(ident):
                rows.append((ident, *((True, get(ident)) for get in getters)))
        return rows

    def _base_columns(self) -> dict[str, array[int]]:
        """Base values of ``generator.column_fields`` for ids 1..size, built on first use."""
        if self._columns is None:
            names = self.generator.column_fields
            arrays = [array("q") for _ in names]
            column_values = self.generator.column_values
            for ident in range(1, self.size + 1):
                for column, value in zip(arrays, column_values(ident), strict=True):
                    column.append(value)
            self._columns = dict(zip(names, arrays, strict=True))
        return self._columns

    def _view(self, ident: int, *, core: bool) -> Record | None:
        if not self.exists(ident):
            return None
        base = self.generator.core(ident) if core else self.generator.record(ident)
        overrides = self._overrides.get(ident)
        return apply(base, overrides) if overrides else base

    # -- mutating ------------------------------------------------------------------------

    def add(self, overrides: Mapping[str, Any] | None = None) -> Record:
        """Enroll a new device with the next id; ``overrides`` deep-merge over the record."""
        with self._lock:
            ident = self._next_id
            self._next_id += 1
            fresh = self.generator.added(ident, self._clock())
            self._overrides[ident] = merged(fresh, _without_id(overrides, self.generator))
            self.version += 1
        record = self.get(ident)
        assert record is not None
        return record

    def change(self, ident: int, overrides: Mapping[str, Any] | None = None) -> Record | None:
        """A new inventory report: report date now, a newer OS, revision + 1."""
        with self._lock:
            current = self.get(ident)
            if current is None:
                return None
            revision = self._revisions.get(ident, 0) + 1
            update = self.generator.changed(ident, revision, current, self._clock())
            update = apply(update, _without_id(overrides, self.generator))
            self._overrides[ident] = merged(self._overrides.get(ident, {}), update)
            self._revisions[ident] = revision
            self.version += 1
        return self.get(ident)

    def delete(self, ident: int) -> bool:
        with self._lock:
            if not self.exists(ident):
                return False
            self._deleted.add(ident)
            self._overrides.pop(ident, None)
            self._revisions.pop(ident, None)
            self.version += 1
            return True


def id_bounds(
    node: rsql.Node | None, id_key: str
) -> tuple[rsql.Node | None, int | None, int | None]:
    """``node`` as (the rest, ids above, ids at most): the bounds a top-level ``;`` puts
    on ``id_key`` (``>``, ``>=``, ``<``, ``<=``), taken out of the filter; the rest keeps
    every other term, in order. Anything else (an ``,`` at the top, ``id==``) is all rest.
    """
    if node is None:
        return None, None, None
    terms = list(_conjuncts(node))
    low: int | None = None
    high: int | None = None
    rest: list[rsql.Node] = []
    for term in terms:
        bound = _id_bound(term, id_key)
        if bound is None:
            rest.append(term)
            continue
        above, at_most = bound
        if above is not None:
            low = above if low is None else max(low, above)
        if at_most is not None:
            high = at_most if high is None else min(high, at_most)
    if low is None and high is None:
        return node, None, None
    remaining = None if not rest else rest[0] if len(rest) == 1 else rsql.And(tuple(rest))
    return remaining, low, high


def _conjuncts(node: rsql.Node) -> Iterator[rsql.Node]:
    if isinstance(node, rsql.And):
        for child in node.children:
            yield from _conjuncts(child)
    else:
        yield node


def _id_bound(node: rsql.Node, id_key: str) -> tuple[int | None, int | None] | None:
    """(ids above, ids at most) for ``id>n``-like terms, else None."""
    if not isinstance(node, rsql.Comparison) or node.selector != id_key:
        return None
    if node.operator not in ("<", "<=", ">", ">="):
        return None
    try:
        value = int(node.arguments[0])
    except ValueError:
        raise rsql.RsqlError(
            f"invalid filter: {node.arguments[0]!r} is not a valid integer for field {id_key!r}"
        ) from None
    if node.operator == ">":
        return value, None
    if node.operator == ">=":
        return value - 1, None
    if node.operator == "<":
        return None, value - 1
    return None, value


def _within(
    ids: Sequence[int], keys: tuple[SortKey, ...], id_key: str, low: int | None, high: int | None
) -> Sequence[int]:
    """The ids of ``ids`` in ``(low, high]``: a slice when they are sorted by id."""
    if len(keys) == 1 and keys[0].name == id_key:
        if keys[0].descending:
            start = 0 if high is None else bisect.bisect_left(ids, -high, key=_negated)
            stop = len(ids) if low is None else bisect.bisect_left(ids, -low, key=_negated)
        else:
            start = 0 if low is None else bisect.bisect_right(ids, low)
            stop = len(ids) if high is None else bisect.bisect_right(ids, high)
        return ids[start : max(start, stop)]
    return array(
        "q",
        (i for i in ids if (low is None or i > low) and (high is None or i <= high)),
    )


def _negated(ident: int) -> int:
    return -ident


def _without_id(overrides: Mapping[str, Any] | None, generator: Generator) -> Record:
    return {k: v for k, v in (overrides or {}).items() if k != generator.id_key}


def _column_getter(
    name: str, columns: Mapping[str, Sequence[int]], id_key: str
) -> Callable[[int], int]:
    if name == id_key:
        return lambda ident: ident
    column = columns[name]
    return lambda ident: column[ident - 1]


def _sort_value(record: Mapping[str, Any], key: SortKey) -> tuple[bool, Any]:
    # (present, value): missing values sort first ascending, last descending.
    value = rsql.record_value(rsql.lookup(record, key.field.path), key.field.type)
    return (value is not None, value) if value is not None else (False, 0)
