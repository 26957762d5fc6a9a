"""The owner's counts per (client, state, day) as one Search of nested group-bys (no row is read).

Why: the app list and the statistics page counted a 100k user's memories by reading every row (100k rows,
~20 GetRange). The search index counts them instead: ``GroupByField(agent_id) > GroupByField(created_day)
> GroupByField(state)``, plus a ``GroupByFilter`` for rows without a client, in one Search with limit 0.

Documented semantics this relies on (Alibaba Cloud, "GroupByField" and "GroupByFilter",
https://www.alibabacloud.com/help/en/tablestore/developer-reference/groupbyfield and
https://www.alibabacloud.com/help/en/tablestore/developer-reference/groupbyfilter): a group-by covers every
row the query matched; a row without the field is in no group; at most 2,000 groups per GroupByField (only
the first are returned). So the answer is checked for completeness: a group whose sub-groups do not add up
to its row count (rows without ``created_day``, written before that column existed, or more than 2,000
days) makes the whole answer incomplete and the caller counts another way. Rows without ``state`` are
active (the payload omits it for active memories).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from tablestore import BoolQuery, ExistsQuery, GroupByField, GroupByFilter, Query, SearchQuery

from tablestore_openmemory_mcp.memory.ports import StoredMemory

from .schema import COL_DAY

#: GroupByField's documented maximum number of groups.
MAX_GROUPS = 2000
_STATES = 10  # active, paused, archived, deleted (and room for more)
CLIENT_GROUPS = "by_client"
NO_CLIENT = "no_client"

Tally = dict[tuple[str | None, str, str], int]


def _days_then_states() -> GroupByField:
    return GroupByField(
        COL_DAY,
        size=MAX_GROUPS,
        sub_group_bys=[GroupByField("state", size=_STATES, name="by_state")],
        name="by_day",
    )


def tally_query(query: Query) -> SearchQuery:
    """Counts of the rows ``query`` matches per client, day and state (limit 0: no row comes back)."""
    by_client = GroupByField("agent_id", size=MAX_GROUPS, sub_group_bys=[_days_then_states()], name=CLIENT_GROUPS)
    no_client = GroupByFilter(
        [BoolQuery(must_not_queries=[ExistsQuery("agent_id")])], sub_group_bys=[_days_then_states()], name=NO_CLIENT
    )
    return SearchQuery(query, limit=0, get_total_count=True, group_bys=[by_client, no_client])


def _named(results: Any, name: str) -> Any:
    for result in results or []:
        if result.name == name:
            return result
    return None


def _days(client: str | None, rows: int, results: Any, out: Counter[tuple[str | None, str, str]]) -> bool:
    """Add one client's rows per day and state to ``out``; False when they do not add up to ``rows``."""
    days = _named(results, "by_day")
    counted = 0
    for day in days.items if days is not None else []:
        counted += day.row_count
        states = _named(day.sub_group_bys, "by_state")
        stated = 0
        for state in states.items if states is not None else []:
            out[(client, str(state.key), str(day.key))] += state.row_count
            stated += state.row_count
        if day.row_count > stated:  # no state column: an active memory
            out[(client, "active", str(day.key))] += day.row_count - stated
    return counted == rows


def read_tally(response: Any) -> Tally | None:
    """The counts from a :func:`tally_query` response, or None when they are incomplete (see the module)."""
    out: Counter[tuple[str | None, str, str]] = Counter()
    total = int(response.total_count or 0)
    seen = 0
    clients = _named(response.group_by_results, CLIENT_GROUPS)
    if clients is None or len(clients.items) >= MAX_GROUPS:
        return None
    for client in clients.items:
        seen += client.row_count
        if not _days(str(client.key), client.row_count, client.sub_group_bys, out):
            return None
    bare = _named(response.group_by_results, NO_CLIENT)
    for item in bare.items if bare is not None else []:
        seen += item.row_count
        if not _days(None, item.row_count, item.sub_group_bys, out):
            return None
    if seen != total:
        return None
    return dict(out)


def add(total: Tally, part: Tally) -> Tally:
    out = Counter(total)
    out.update(part)
    return dict(out)


def tally_rows(memories: Iterable[StoredMemory]) -> Tally:
    """The counts of memories in hand per (client, state, day created)."""
    counts: Counter[tuple[str | None, str, str]] = Counter()
    for memory in memories:
        counts[(memory.client, memory.state, memory.created_at[:10])] += 1
    return dict(counts)
