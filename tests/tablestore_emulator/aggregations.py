"""Search aggregations: ``count`` and the ``group_by_field`` / ``group_by_filter`` group-bys, nested.

Why: the store answers the owner's app list and statistics with one Search of aggregations instead of
reading every row, so the emulator answers them the way the service does (wire format of the SDK's
``tablestore.aggregation`` / ``tablestore.group_by``, search.proto ``Aggregations`` / ``GroupBys``).

Semantics, from Alibaba's pages (developer-reference/groupbyfield, groupbyfilter, python-sdk-aggregation,
https://www.alibabacloud.com/help/en/tablestore/developer-reference/groupbyfield):

* an aggregation runs over every row the query matched, not the returned page (limit 0 is allowed);
* GroupByField: one group per value of the field (each element of an array field), default size 10,
  maximum 2,000 (only the first groups are returned), sorted by row count descending unless told; rows
  without the field belong to no group; the field must be indexed with sort-and-aggregation enabled;
* GroupByFilter: one group per filter query, in the order given;
* Count: the number of matched rows in which the field has a value.

Not emulated: min/max/sum/avg, distinct count, percentiles, top rows, range/histogram/geo group-bys
(refused with OTSParameterInvalid, so a caller relying on them fails loudly here too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tablestore.protobuf import search_pb2 as spb

from .errors import invalid
from .store import CKey

if TYPE_CHECKING:
    from .search import SearchIndex

MAX_GROUP_SIZE = 2000
DEFAULT_GROUP_SIZE = 10


def _sortable(index: SearchIndex, name: str) -> None:
    fd = index.field(name)
    for fs in index.schema.field_schemas:
        if fs.field_name == name and not fs.enable_sort_and_agg:
            raise invalid(f"field:[{name}] must enable enable_sort_and_agg to be used in an aggregation.")
    if fd.ftype in (spb.TEXT, spb.VECTOR):
        raise invalid(f"field:[{name}] of type {spb.FieldType.Name(fd.ftype)} can not be aggregated.")


def _values(index: SearchIndex, key: CKey, name: str) -> list[Any]:
    doc = index.docs.get(key)
    return list(doc.values.get(name) or []) if doc is not None else []


def _key_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_aggs(index: SearchIndex, aggs: spb.Aggregations, keys: set[CKey]) -> spb.AggregationsResult:
    out = spb.AggregationsResult()
    for agg in aggs.aggs:
        if agg.type != spb.AGG_COUNT:
            raise invalid(f"Aggregation type {spb.AggregationType.Name(agg.type)} is not supported by the emulator.")
        body = spb.CountAggregation()
        body.ParseFromString(agg.body)
        index.field(body.field_name)
        value = sum(1 for k in keys if _values(index, k, body.field_name))
        out.agg_results.add(
            name=agg.name, type=agg.type, agg_result=spb.CountAggregationResult(value=value).SerializeToString()
        )
    return out


def _subs(index: SearchIndex, sub_aggs: Any, sub_group_bys: Any, keys: set[CKey], item: Any) -> None:
    if sub_aggs is not None and len(sub_aggs.aggs):
        item.sub_aggs_result.CopyFrom(run_aggs(index, sub_aggs, keys))
    if sub_group_bys is not None and len(sub_group_bys.group_bys):
        item.sub_group_bys_result.CopyFrom(run_group_bys(index, sub_group_bys, keys))


def _group_by_field(index: SearchIndex, raw: bytes, keys: set[CKey]) -> bytes:
    body = spb.GroupByField()
    body.ParseFromString(raw)
    _sortable(index, body.field_name)
    size = body.size if body.HasField("size") else DEFAULT_GROUP_SIZE
    if not 0 < size <= MAX_GROUP_SIZE:
        raise invalid(f"GroupByField size must be in range (0, {MAX_GROUP_SIZE}], but is {size}.")
    groups: dict[str, set[CKey]] = {}
    for key in keys:
        for value in set(_values(index, key, body.field_name)):
            groups.setdefault(_key_text(value), set()).add(key)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    for sorter in reversed(list(body.sort.sorters) if body.HasField("sort") else []):
        if sorter.HasField("group_key_sort"):
            desc = sorter.group_key_sort.order == spb.SORT_ORDER_DESC
            ordered.sort(key=lambda kv: kv[0], reverse=desc)
        elif sorter.HasField("row_count_sort"):
            desc = sorter.row_count_sort.order != spb.SORT_ORDER_ASC
            ordered.sort(key=lambda kv: len(kv[1]), reverse=desc)
        else:
            raise invalid("Only group key and row count sorts are supported by the emulator.")
    result = spb.GroupByFieldResult()
    for text, members in ordered[:size]:
        item = result.group_by_field_result_items.add(key=text, row_count=len(members))
        _subs(index, body.sub_aggs if body.HasField("sub_aggs") else None,
              body.sub_group_bys if body.HasField("sub_group_bys") else None, members, item)  # fmt: skip
    return result.SerializeToString()


def _group_by_filter(index: SearchIndex, raw: bytes, keys: set[CKey]) -> bytes:
    body = spb.GroupByFilter()
    body.ParseFromString(raw)
    result = spb.GroupByFilterResult()
    for query in body.filters:
        members = keys & set(index.evaluate(query, len(keys)))
        item = result.group_by_filter_result_items.add(row_count=len(members))
        _subs(index, body.sub_aggs if body.HasField("sub_aggs") else None,
              body.sub_group_bys if body.HasField("sub_group_bys") else None, members, item)  # fmt: skip
    return result.SerializeToString()


_GROUP_BYS = {spb.GROUP_BY_FIELD: _group_by_field, spb.GROUP_BY_FILTER: _group_by_filter}


def run_group_bys(index: SearchIndex, group_bys: spb.GroupBys, keys: set[CKey]) -> spb.GroupBysResult:
    out = spb.GroupBysResult()
    for group_by in group_bys.group_bys:
        handler = _GROUP_BYS.get(group_by.type)
        if handler is None:
            raise invalid(f"GroupBy type {spb.GroupByType.Name(group_by.type)} is not supported by the emulator.")
        out.group_by_results.add(name=group_by.name, type=group_by.type,
                                 group_by_result=handler(index, group_by.body, keys))  # fmt: skip
    return out


def aggregate(index: SearchIndex, query: spb.SearchQuery, keys: set[CKey]) -> dict[str, bytes]:
    """The response's ``aggs`` and ``group_bys`` bytes for the rows ``keys`` the query matched."""
    out: dict[str, bytes] = {}
    if query.HasField("aggs") and len(query.aggs.aggs):
        out["aggs"] = run_aggs(index, query.aggs, keys).SerializeToString()
    if query.HasField("group_bys") and len(query.group_bys.group_bys):
        out["group_bys"] = run_group_bys(index, query.group_bys, keys).SerializeToString()
    return out
