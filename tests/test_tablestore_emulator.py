"""Round trips through the real `tablestore` SDK against the local emulator, one or more per API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
import pytest
from tablestore import (
    INF_MAX,
    INF_MIN,
    AnalyzerType,
    AsyncOTSClient,
    BatchGetRowRequest,
    BatchWriteRowRequest,
    BoolQuery,
    CapacityUnit,
    ColumnReturnType,
    ColumnsToGet,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    DeleteRowItem,
    Direction,
    ExistsQuery,
    FieldSchema,
    FieldSort,
    FieldType,
    KnnVectorQuery,
    LogicalOperator,
    MatchAllQuery,
    MatchPhraseQuery,
    MatchQuery,
    OTSClient,
    OTSClientError,
    OTSServiceError,
    PrefixQuery,
    PrimaryKeySort,
    PutRowItem,
    RangeQuery,
    ReservedThroughput,
    Row,
    RowExistenceExpectation,
    ScoreSort,
    SearchIndexMeta,
    SearchQuery,
    SingleColumnCondition,
    Sort,
    SortOrder,
    SyncPhase,
    TableInBatchGetRowItem,
    TableInBatchWriteRowItem,
    TableMeta,
    TableOptions,
    TermQuery,
    TermsQuery,
    UpdateRowItem,
    VectorDataType,
    VectorMetricType,
    VectorOptions,
    WildcardQuery,
)
from tablestore.retry import DefaultRetryPolicy, NoRetryPolicy

from tests.fakes.tablestore_fixture import tablestore_emulator  # noqa: F401
from tests.tablestore_emulator import TablestoreEmulator
from tests.waiting import wait_for

DIM = 4


class FastRetry(DefaultRetryPolicy):
    """The SDK's default policy, minus the sleeping, so fault tests stay fast."""

    max_retry_times = 3

    def get_retry_delay(self, retry_times: int, exception: Exception, api_name: str) -> float:
        return 0.0


class ManyRetry(FastRetry):
    max_retry_times = 30


def make_client(emu: TablestoreEmulator, **kwargs: object) -> OTSClient:
    return OTSClient(emu.endpoint, emu.access_key_id, emu.access_key_secret, emu.instance_name, **kwargs)


def create_table(client: OTSClient, name: str = "mem", pk: list | None = None) -> None:
    client.create_table(
        TableMeta(name, pk or [("id", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0))
    )


def vec(*xs: float) -> str:
    return json.dumps(list(xs))


def create_index(client: OTSClient, metric: VectorMetricType = VectorMetricType.VM_COSINE) -> None:
    fields = [
        FieldSchema("user_id", FieldType.KEYWORD, index=True, enable_sort_and_agg=True),
        FieldSchema("tags", FieldType.KEYWORD, is_array=True),
        FieldSchema("text", FieldType.TEXT, analyzer=AnalyzerType.MAXWORD),
        FieldSchema("n", FieldType.LONG, enable_sort_and_agg=True),
        FieldSchema("score", FieldType.DOUBLE),
        FieldSchema("flag", FieldType.BOOLEAN),
        FieldSchema(
            "embedding",
            FieldType.VECTOR,
            vector_options=VectorOptions(VectorDataType.VD_FLOAT_32, metric, DIM),
        ),
    ]
    client.create_search_index("mem", "mem_idx", SearchIndexMeta(fields))


def seed_rows(client: OTSClient) -> None:
    rows = [
        ("a", "alice", '["x","y"]', "我喜欢喝绿茶 green tea", 1, 0.5, True, vec(1, 0, 0, 0)),
        ("b", "alice", '["y"]', "He likes coffee in the morning", 2, 1.5, False, vec(0, 1, 0, 0)),
        ("c", "bob", '["z"]', "喝咖啡 coffee lover", 3, 2.5, True, vec(0.9, 0.1, 0, 0)),
        ("d", "bob", "[]", "nothing relevant here", 4, 3.5, False, vec(0, 0, 1, 0)),
    ]
    for rid, user, tags, text, n, score, flag, emb in rows:
        cols = [("user_id", user), ("tags", tags), ("text", text), ("n", n), ("score", score), ("flag", flag)]
        client.put_row("mem", Row([("id", rid)], [*cols, ("embedding", emb)]))


def wire_level(emu: TablestoreEmulator) -> TablestoreEmulator:
    """No index lag and no warm-up windows: these tests are about one API's semantics; the lag, the not-ready
    table and the initializing index have tests of their own (every other rule stays strict)."""
    emu.index_delay = 0
    emu.table_ready_seconds = 0
    emu.index_ready_seconds = 0
    return emu


@pytest.fixture
def client(tablestore_emulator: TablestoreEmulator) -> OTSClient:  # noqa: F811
    return make_client(wire_level(tablestore_emulator))


@pytest.fixture
def seeded(client: OTSClient) -> OTSClient:
    create_table(client)
    create_index(client)
    seed_rows(client)
    return client


def ids(rows: list) -> list[str]:
    return [r[0][0][1] for r in rows]


# ---- tables --------------------------------------------------------------------------------------
def test_table_lifecycle(client: OTSClient) -> None:
    create_table(client, "t1", [("pk1", "STRING"), ("pk2", "INTEGER")])
    assert client.list_table() == ("t1",)
    desc = client.describe_table("t1")
    assert desc.table_meta.schema_of_primary_key == [("pk1", "STRING"), ("pk2", "INTEGER")]
    client.update_table("t1", TableOptions(time_to_live=86400, max_version=1), None)
    assert client.describe_table("t1").table_options.time_to_live == 86400
    with pytest.raises(OTSServiceError) as exc:
        create_table(client, "t1")
    assert exc.value.code == "OTSObjectAlreadyExist"
    client.delete_table("t1")
    assert client.list_table() == ()
    with pytest.raises(OTSServiceError) as exc:
        client.describe_table("t1")
    assert exc.value.code == "OTSObjectNotExist" and "does not exist" in exc.value.message
    assert exc.value.http_status == 404


@pytest.mark.parametrize("bad", ["1abc", "has-dash", "", "x" * 256, "空"])
def test_invalid_table_name(client: OTSClient, bad: str) -> None:
    with pytest.raises((OTSServiceError, OTSClientError)) as exc:
        create_table(client, bad)
    if isinstance(exc.value, OTSServiceError):
        assert exc.value.code == "OTSParameterInvalid"


# ---- rows ----------------------------------------------------------------------------------------
def test_put_get_update_delete(client: OTSClient) -> None:
    create_table(client)
    client.put_row(
        "mem", Row([("id", "r1")], [("a", "中文"), ("b", 1), ("c", 1.5), ("d", True), ("e", bytearray(b"\0"))])
    )
    _, row, _ = client.get_row("mem", [("id", "r1")], max_version=1)
    assert row.primary_key == [("id", "r1")]
    assert {c[0]: c[1] for c in row.attribute_columns} == {
        "a": "中文",
        "b": 1,
        "c": 1.5,
        "d": True,
        "e": bytearray(b"\0"),
    }
    _, row, _ = client.get_row("mem", [("id", "r1")], columns_to_get=["b"], max_version=1)
    assert [c[0] for c in row.attribute_columns] == ["b"]

    cond = Condition(RowExistenceExpectation.EXPECT_EXIST)
    client.update_row("mem", Row([("id", "r1")], {"PUT": [("b", 2)], "DELETE_ALL": ["a", "c"]}), cond)
    _, row, _ = client.get_row("mem", [("id", "r1")], max_version=1)
    assert {c[0]: c[1] for c in row.attribute_columns} == {"b": 2, "d": True, "e": bytearray(b"\0")}
    ts = next(c[2] for c in row.attribute_columns if c[0] == "d")
    client.update_row("mem", Row([("id", "r1")], {"DELETE": [("d", None, ts)]}), cond)
    _, row, _ = client.get_row("mem", [("id", "r1")], max_version=1)
    assert "d" not in {c[0] for c in row.attribute_columns}

    with pytest.raises(OTSServiceError) as exc:
        client.update_row("mem", Row([("id", "nope")], {"PUT": [("b", 1)]}), cond)
    assert exc.value.code == "OTSConditionCheckFail"
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("mem", Row([("id", "r1")], [("a", "x")]), Condition(RowExistenceExpectation.EXPECT_NOT_EXIST))
    assert exc.value.code == "OTSConditionCheckFail"
    col_cond = Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("b", 99, ComparatorType.EQUAL))
    with pytest.raises(OTSServiceError):
        client.put_row("mem", Row([("id", "r1")], [("a", "x")]), col_cond)

    client.delete_row("mem", Row([("id", "r1")]), None)
    _, row, _ = client.get_row("mem", [("id", "r1")], max_version=1)
    assert row is None
    with pytest.raises(OTSServiceError) as exc:
        client.delete_row("mem", Row([("id", "r1")]), Condition(RowExistenceExpectation.EXPECT_EXIST))
    assert exc.value.code == "OTSConditionCheckFail"


def test_row_errors(client: OTSClient) -> None:
    create_table(client)
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("missing", Row([("id", "a")], [("x", 1)]))
    assert exc.value.code == "OTSObjectNotExist"
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("mem", Row([("wrong", "a")], [("x", 1)]))
    assert exc.value.code == "OTSParameterInvalid"
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("mem", Row([("id", 5)], [("x", 1)]))
    assert exc.value.code == "OTSParameterInvalid"
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("mem", Row([("id", "a")], [("x", "v" * (2 * 1024 * 1024 + 1))]))
    assert exc.value.code == "OTSParameterInvalid"


def test_batch_write_and_get(client: OTSClient) -> None:
    create_table(client)
    req = BatchWriteRowRequest()
    items = [
        PutRowItem(Row([("id", f"k{i:03d}")], [("n", i)]), Condition(RowExistenceExpectation.IGNORE))
        for i in range(200)
    ]
    req.add(TableInBatchWriteRowItem("mem", items))
    resp = client.batch_write_row(req)
    assert resp.is_all_succeed()

    req = BatchWriteRowRequest()
    req.add(
        TableInBatchWriteRowItem(
            "mem",
            [
                UpdateRowItem(
                    Row([("id", "k000")], {"PUT": [("n", -1)]}), Condition(RowExistenceExpectation.EXPECT_EXIST)
                ),
                PutRowItem(Row([("id", "k001")], [("n", 0)]), Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)),
                DeleteRowItem(Row([("id", "k002")]), Condition(RowExistenceExpectation.IGNORE)),
            ],
        )
    )
    resp = client.batch_write_row(req)
    _, failed = resp.get_put()
    assert len(failed) == 1 and failed[0].error_code == "OTSConditionCheckFail"
    assert resp.get_update()[0][0].is_ok and resp.get_delete()[0][0].is_ok

    req = BatchWriteRowRequest()
    req.add(
        TableInBatchWriteRowItem(
            "mem",
            [
                PutRowItem(Row([("id", f"x{i}")], [("n", i)]), Condition(RowExistenceExpectation.IGNORE))
                for i in range(201)
            ],
        )
    )
    with pytest.raises(OTSServiceError) as exc:
        client.batch_write_row(req)
    assert exc.value.code == "OTSParameterInvalid"

    get = BatchGetRowRequest()
    get.add(TableInBatchGetRowItem("mem", [[("id", "k000")], [("id", "k002")], [("id", "k100")]], max_version=1))
    get.add(TableInBatchGetRowItem("missing", [[("id", "k000")]], max_version=1))
    result = client.batch_get_row(get)
    rows = result.get_result_by_table("mem")
    assert rows[0].row.attribute_columns[0][1] == -1
    assert rows[1].is_ok and rows[1].row is None
    assert rows[2].row.attribute_columns[0][1] == 100
    missing = result.get_result_by_table("missing")
    assert not missing[0].is_ok and missing[0].error_code == "OTSObjectNotExist"

    too_many = BatchGetRowRequest()
    too_many.add(TableInBatchGetRowItem("mem", [[("id", f"k{i:03d}")] for i in range(101)], max_version=1))
    with pytest.raises(OTSServiceError) as exc:
        client.batch_get_row(too_many)
    assert exc.value.code == "OTSParameterInvalid"


def test_get_range_paging(client: OTSClient) -> None:
    create_table(client, "r", [("p", "STRING"), ("q", "INTEGER")])
    req = BatchWriteRowRequest()
    req.add(
        TableInBatchWriteRowItem(
            "r",
            [
                PutRowItem(
                    Row([("p", "u"), ("q", i)], [("v", i), ("w", "x")]), Condition(RowExistenceExpectation.IGNORE)
                )
                for i in range(25)
            ],
        )
    )
    client.batch_write_row(req)
    client.put_row("r", Row([("p", "v"), ("q", 0)], [("v", 99)]))
    start, got = [("p", "u"), ("q", INF_MIN)], []
    while start is not None:
        _, start, rows, _ = client.get_range(
            "r", Direction.FORWARD, start, [("p", "u"), ("q", INF_MAX)], columns_to_get=["v"], limit=10, max_version=1
        )
        got.extend(rows)
        assert len(rows) <= 10
    assert [r.primary_key[1][1] for r in got] == list(range(25))
    assert all([c[0] for c in r.attribute_columns] == ["v"] for r in got)
    _, nxt, rows, _ = client.get_range(
        "r",
        Direction.BACKWARD,
        [("p", INF_MAX), ("q", INF_MAX)],
        [("p", INF_MIN), ("q", INF_MIN)],
        limit=3,
        max_version=1,
    )
    assert rows[0].primary_key == [("p", "v"), ("q", 0)]
    assert [r.primary_key[1][1] for r in rows[1:]] == [24, 23]
    assert nxt == [("p", "u"), ("q", 22)]
    # the SDK's iterator follows next_start_primary_key across pages
    all_rows = list(
        client.xget_range(
            "r",
            Direction.FORWARD,
            [("p", INF_MIN), ("q", INF_MIN)],
            [("p", INF_MAX), ("q", INF_MAX)],
            CapacityUnit(0, 0),
            max_version=1,
        )
    )
    assert len(all_rows) == 26


# ---- search indexes -------------------------------------------------------------------------------
def test_search_index_lifecycle(client: OTSClient) -> None:
    create_table(client)
    create_index(client, VectorMetricType.VM_DOT_PRODUCT)
    assert client.list_search_index("mem") == [("mem", "mem_idx")]
    meta, _ = client.describe_search_index("mem", "mem_idx")
    vf = next(f for f in meta.fields if f.field_name == "embedding")
    assert vf.field_type == FieldType.VECTOR
    assert vf.vector_options.dimension == DIM
    assert vf.vector_options.metric_type == VectorMetricType.VM_DOT_PRODUCT
    with pytest.raises(OTSServiceError) as exc:
        create_index(client)
    assert exc.value.code == "OTSObjectAlreadyExist"
    client.delete_search_index("mem", "mem_idx")
    assert client.list_search_index("mem") == []
    with pytest.raises(OTSServiceError) as exc:
        client.describe_search_index("mem", "mem_idx")
    assert "does not exist" in exc.value.message
    too_big = FieldSchema(
        "e",
        FieldType.VECTOR,
        vector_options=VectorOptions(VectorDataType.VD_FLOAT_32, VectorMetricType.VM_COSINE, 4097),
    )
    with pytest.raises(OTSServiceError) as exc:
        client.create_search_index("mem", "big", SearchIndexMeta([too_big]))
    assert exc.value.code == "OTSParameterInvalid"


def test_knn_search_scores_filter_and_limits(seeded: OTSClient) -> None:
    q = KnnVectorQuery("embedding", top_k=3, float32_query_vector=[1.0, 0.0, 0.0, 0.0])
    resp = seeded.search(
        "mem", "mem_idx", SearchQuery(q, limit=3, get_total_count=True), ColumnsToGet(return_type=ColumnReturnType.ALL)
    )
    assert ids(resp.rows) == ["a", "c", "b"]
    assert resp.total_count == 3
    scores = [h.score for h in resp.search_hits]
    cos_c = 0.9 / np.linalg.norm([0.9, 0.1])
    assert scores == pytest.approx([1.0, (1 + cos_c) / 2, 0.5], rel=1e-5)
    attrs = resp.rows[0][1]
    assert len(attrs[0]) == 3 and attrs[0][2] is None  # python codec: (name, value, None)

    filt = BoolQuery(must_queries=[TermQuery("user_id", "bob")])
    resp = seeded.search(
        "mem",
        "mem_idx",
        SearchQuery(KnnVectorQuery("embedding", top_k=10, float32_query_vector=[1.0, 0, 0, 0], filter=filt), limit=10),
    )
    assert ids(resp.rows) == ["c", "d"]
    assert resp.total_count == -1
    resp = seeded.search(
        "mem",
        "mem_idx",
        SearchQuery(
            KnnVectorQuery("embedding", top_k=10, float32_query_vector=[1.0, 0, 0, 0], min_score=0.9), limit=10
        ),
    )
    assert ids(resp.rows) == ["a", "c"]

    for bad in (
        KnnVectorQuery("embedding", top_k=3, float32_query_vector=[1.0, 0.0]),
        KnnVectorQuery("embedding", top_k=1001, float32_query_vector=[1.0, 0, 0, 0]),
    ):
        with pytest.raises(OTSServiceError) as exc:
            seeded.search("mem", "mem_idx", SearchQuery(bad, limit=3))
        assert exc.value.code == "OTSParameterInvalid"
    with pytest.raises(OTSServiceError) as exc:
        seeded.search("mem", "mem_idx", SearchQuery(MatchAllQuery(), offset=99_990, limit=20))
    assert exc.value.code == "OTSParameterInvalid"
    with pytest.raises(OTSServiceError) as exc:
        seeded.search(
            "mem", "mem_idx", SearchQuery(MatchAllQuery(), limit=101), ColumnsToGet(return_type=ColumnReturnType.ALL)
        )
    assert exc.value.code == "OTSParameterInvalid"
    with pytest.raises(OTSServiceError) as exc:
        seeded.search("mem", "nope", SearchQuery(MatchAllQuery()))
    assert exc.value.code == "OTSObjectNotExist" and "does not exist" in exc.value.message


@pytest.mark.parametrize(
    ("metric", "expected"),
    [(VectorMetricType.VM_EUCLIDEAN, 1 / (1 + 2.0)), (VectorMetricType.VM_DOT_PRODUCT, 0.5)],
)
def test_knn_metrics(client: OTSClient, metric: VectorMetricType, expected: float) -> None:
    create_table(client)
    create_index(client, metric)
    client.put_row("mem", Row([("id", "b")], [("embedding", vec(0, 1, 0, 0))]))
    resp = client.search(
        "mem",
        "mem_idx",
        SearchQuery(KnnVectorQuery("embedding", top_k=1, float32_query_vector=[1.0, 0, 0, 0]), limit=1),
    )
    assert resp.search_hits[0].score == pytest.approx(expected)


def test_structured_queries(seeded: OTSClient) -> None:
    def run(query: object, **kw: object) -> list[str]:
        sort = kw.pop("sort", Sort([PrimaryKeySort()]))
        return ids(seeded.search("mem", "mem_idx", SearchQuery(query, sort=sort, limit=10, **kw)).rows)

    assert run(MatchAllQuery()) == ["a", "b", "c", "d"]
    assert run(TermQuery("user_id", "alice")) == ["a", "b"]
    assert run(TermsQuery("tags", ["x", "z"])) == ["a", "c"]
    assert run(TermQuery("flag", True)) == ["a", "c"]
    assert run(RangeQuery("n", 2, 4, include_lower=True, include_upper=False)) == ["b", "c"]
    assert run(RangeQuery("score", range_from=2.0)) == ["c", "d"]
    assert run(ExistsQuery("tags")) == ["a", "b", "c"]  # an empty array does not exist
    assert run(PrefixQuery("user_id", "al")) == ["a", "b"]
    assert run(WildcardQuery("user_id", "b*b")) == ["c", "d"]
    assert run(BoolQuery(must_not_queries=[TermQuery("user_id", "alice")])) == ["c", "d"]
    assert run(BoolQuery(should_queries=[TermQuery("n", 1), TermQuery("n", 4)], minimum_should_match=1)) == ["a", "d"]
    assert run(
        BoolQuery(
            filter_queries=[TermQuery("user_id", "bob")], should_queries=[TermQuery("n", 3)], minimum_should_match=1
        )
    ) == ["c"]
    assert run(MatchAllQuery(), sort=Sort([FieldSort("n", SortOrder.DESC)])) == ["d", "c", "b", "a"]
    with pytest.raises(OTSServiceError):
        run(TermQuery("nope", "x"))


def test_match_queries_chinese_and_scoring(seeded: OTSClient) -> None:
    resp = seeded.search("mem", "mem_idx", SearchQuery(MatchQuery("text", "咖啡"), limit=10, sort=Sort([ScoreSort()])))
    assert ids(resp.rows) == ["c"]
    resp = seeded.search("mem", "mem_idx", SearchQuery(MatchQuery("text", "Coffee"), limit=10))
    assert sorted(ids(resp.rows)) == ["b", "c"]
    assert all(h.score > 0 for h in resp.search_hits)
    resp = seeded.search("mem", "mem_idx", SearchQuery(MatchPhraseQuery("text", "coffee lover"), limit=10))
    assert ids(resp.rows) == ["c"]
    hybrid = BoolQuery(
        should_queries=[
            MatchQuery("text", "绿茶"),
            KnnVectorQuery("embedding", top_k=2, float32_query_vector=[0.0, 0.0, 1.0, 0.0]),
        ],
        minimum_should_match=1,
    )
    # top_k (2) < limit (10): the service widens top_k to the limit, so every row comes back
    resp = seeded.search("mem", "mem_idx", SearchQuery(hybrid, limit=10, sort=Sort([ScoreSort()])))
    assert sorted(ids(resp.rows)) == ["a", "b", "c", "d"] and set(ids(resp.rows)[:2]) == {"a", "d"}
    resp = seeded.search("mem", "mem_idx", SearchQuery(hybrid, limit=2, sort=Sort([ScoreSort()])))
    assert sorted(ids(resp.rows)) == ["a", "d"]


def test_search_paging_tokens_and_columns(seeded: OTSClient) -> None:
    for i in range(30):
        seeded.put_row("mem", Row([("id", f"z{i:02d}")], [("user_id", "carol"), ("n", 100 + i)]))
    query = SearchQuery(TermQuery("user_id", "carol"), limit=7, get_total_count=True, sort=Sort([PrimaryKeySort()]))
    seen: list[str] = []
    while True:
        resp = seeded.search("mem", "mem_idx", query, ColumnsToGet(["n"], ColumnReturnType.SPECIFIED))
        assert resp.total_count == 30
        assert len(resp.search_hits) == len(resp.rows)
        seen.extend(ids(resp.rows))
        assert all([a[0] for a in r[1]] == ["n"] for r in resp.rows)
        if not resp.next_token:
            break
        query.next_token = resp.next_token
    assert seen == [f"z{i:02d}" for i in range(30)]
    resp = seeded.search("mem", "mem_idx", SearchQuery(TermQuery("user_id", "carol"), offset=28, limit=5))
    assert len(resp.rows) == 2 and resp.rows[0][1] == []
    resp = seeded.search(
        "mem",
        "mem_idx",
        SearchQuery(TermQuery("user_id", "bob")),
        ColumnsToGet(return_type=ColumnReturnType.ALL_FROM_INDEX),
    )
    cols = {a[0] for a in resp.rows[0][1]}
    assert "user_id" in cols and "embedding" in cols


def test_index_delay(seeded: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    tablestore_emulator.index_delay = 0.3
    seeded.put_row("mem", Row([("id", "new")], [("user_id", "dave")]))
    seeded.update_row("mem", Row([("id", "a")], {"PUT": [("user_id", "eve")]}), None)
    seeded.delete_row("mem", Row([("id", "d")]), None)

    def users(name: str) -> list[str]:
        return ids(seeded.search("mem", "mem_idx", SearchQuery(TermQuery("user_id", name), limit=10)).rows)

    assert users("dave") == [] and users("eve") == [] and "a" in users("alice") and "d" in users("bob")
    _, row, _ = seeded.get_row("mem", [("id", "new")], max_version=1)
    assert row is not None  # GetRow is strongly consistent
    wait_for(lambda: users("dave") == ["new"], "the index to see the writes after its delay")
    assert users("dave") == ["new"] and users("eve") == ["a"] and users("bob") == ["c"]


# ---- faults ------------------------------------------------------------------------------------
def test_faults_retried_and_surfaced(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    emu = wire_level(tablestore_emulator)
    client = make_client(emu, retry_policy=FastRetry())
    create_table(client)
    emu.reset_counts()
    emu.inject("ListTable", "OTSServerBusy", times=2)
    assert client.list_table() == ("mem",)
    assert emu.counts["ListTable"] == 3
    emu.inject("GetRow", "http503", times=1)
    with pytest.raises(OTSClientError) as cexc:
        client.get_row("mem", [("id", "x")], max_version=1)
    assert cexc.value.get_http_status() == 503
    emu.inject("PutRow", "OTSServerBusy", times=10)
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("mem", Row([("id", "x")], [("v", 1)]))
    assert exc.value.code == "OTSServerBusy" and emu.counts["PutRow"] == 4
    emu.clear_faults()
    emu.inject("*", "OTSTimeout", times=1)
    with pytest.raises(OTSServiceError) as exc:  # Search is never retried by the SDK
        client.put_row("mem", Row([("id", "x")], [("v", 1)]))
    assert exc.value.code == "OTSTimeout"
    emu.reset_counts()
    client = make_client(emu, retry_policy=ManyRetry())
    emu.inject("PutRow", "OTSOperationThrottled", rate=0.5, seed=1)
    for i in range(20):
        client.put_row("mem", Row([("id", f"r{i}")], [("v", i)]))
    assert emu.counts["PutRow"] > 20
    emu.clear_faults()


def test_drop_and_hang(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    emu = wire_level(tablestore_emulator)
    emu.hang_seconds = 1.0
    client = make_client(emu, socket_timeout=0.3, retry_policy=FastRetry())
    create_table(client)
    emu.inject("GetRow", "drop", times=1)
    with pytest.raises(Exception):  # noqa: B017 - urllib3 surfaces a protocol error
        client.get_row("mem", [("id", "x")], max_version=1)
    emu.inject("GetRow", "hang", times=1)
    with pytest.raises(Exception):  # noqa: B017 - read timeout
        client.get_row("mem", [("id", "x")], max_version=1)
    assert client.get_row("mem", [("id", "x")], max_version=1)[1] is None


def test_auth(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    emu = wire_level(tablestore_emulator)
    v4 = make_client(emu, region="cn-hangzhou")
    create_table(v4)
    assert v4.list_table() == ("mem",)
    bad = OTSClient(emu.endpoint, emu.access_key_id, "wrong", emu.instance_name)
    with pytest.raises(OTSServiceError) as exc:
        bad.list_table()
    assert exc.value.code == "OTSAuthFailed" and exc.value.http_status == 403
    bad_v4 = OTSClient(emu.endpoint, emu.access_key_id, "wrong", emu.instance_name, region="cn-hangzhou")
    with pytest.raises(OTSServiceError):
        bad_v4.list_table()


# ---- async client and concurrency ------------------------------------------------------------------
def test_async_client(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    emu = wire_level(tablestore_emulator)  # the search below reads rows written just before

    async def main() -> None:
        async with AsyncOTSClient(emu.endpoint, emu.access_key_id, emu.access_key_secret, emu.instance_name) as c:
            await c.create_table(
                TableMeta("mem", [("id", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0))
            )
            assert await c.list_table() == ("mem",)
            fields = [
                FieldSchema(
                    "embedding",
                    FieldType.VECTOR,
                    vector_options=VectorOptions(VectorDataType.VD_FLOAT_32, VectorMetricType.VM_COSINE, DIM),
                )
            ]
            await c.create_search_index("mem", "mem_idx", SearchIndexMeta(fields))
            await asyncio.gather(
                *[c.put_row("mem", Row([("id", f"r{i}")], [("embedding", vec(i, 1, 0, 0))])) for i in range(20)]
            )
            _, row, _ = await c.get_row("mem", [("id", "r3")], max_version=1)
            assert row.primary_key == [("id", "r3")]
            _, _, rows, _ = await c.get_range(
                "mem", Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)], max_version=1
            )
            assert len(rows) == 20
            resp = await c.search(
                "mem",
                "mem_idx",
                SearchQuery(KnnVectorQuery("embedding", top_k=5, float32_query_vector=[0.0, 1.0, 0.0, 0.0]), limit=5),
            )
            assert ids(resp.rows)[0] == "r0"
            await c.delete_row("mem", Row([("id", "r3")]), None)
            await c.delete_search_index("mem", "mem_idx")
            await c.delete_table("mem")

    asyncio.run(main())


def test_knn_performance_10k(tablestore_emulator: TablestoreEmulator, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Load the store directly (the wire path is covered above) and run a KNN over 10k x 384 vectors.

    What keeps it fast is counted, not timed: a search scores the index's one vector matrix in a single call and
    decodes no row's vector again. The vectors are BLOB float32 here only to keep setup fast; JSON strings parse
    at ~0.4 us/float.
    """
    from tests.tablestore_emulator import search as search_module
    from tests.tablestore_emulator.search import SearchIndex
    from tests.tablestore_emulator.store import StoredRow, Table

    wire_level(tablestore_emulator)  # rows are committed straight into the store below
    client = make_client(tablestore_emulator)
    create_table(client)
    fields = [
        FieldSchema("user_id", FieldType.KEYWORD),
        FieldSchema(
            "embedding",
            FieldType.VECTOR,
            vector_options=VectorOptions(VectorDataType.VD_FLOAT_32, VectorMetricType.VM_COSINE, 384),
        ),
    ]
    client.create_search_index("mem", "mem_idx", SearchIndexMeta(fields))
    store = tablestore_emulator.store
    table: Table = store.tables["mem"]
    index: SearchIndex = table.indexes["mem_idx"]
    rng = np.random.default_rng(0)
    data = rng.standard_normal((10_000, 384)).astype(np.float32)
    with store.lock:
        for i in range(10_000):
            key = ((1, f"r{i:05d}"),)
            row = StoredRow(
                key, [("id", f"r{i:05d}")], {"user_id": (f"u{i % 10}", 0), "embedding": (data[i].tobytes(), 0)}
            )
            store.commit(table, key, row, time.monotonic())
    assert len(index.docs) == 10_000
    query = SearchQuery(KnnVectorQuery("embedding", top_k=10, float32_query_vector=data[42].tolist()), limit=10)
    assert index.slab is not None and len(index.slab.keys) == 10_000
    calls = {"knn": 0, "parse_vector": 0}
    knn, parse_vector = search_module.VectorSlab.knn, search_module._parse_vector

    def counted_knn(self: Any, *args: Any) -> Any:
        calls["knn"] += 1
        return knn(self, *args)

    def counted_parse(*args: Any) -> Any:
        calls["parse_vector"] += 1
        return parse_vector(*args)

    monkeypatch.setattr(search_module.VectorSlab, "knn", counted_knn)
    monkeypatch.setattr(search_module, "_parse_vector", counted_parse)
    resp = client.search("mem", "mem_idx", query)
    assert ids(resp.rows)[0] == "r00042"
    filtered = SearchQuery(
        KnnVectorQuery(
            "embedding", top_k=10, float32_query_vector=data[42].tolist(), filter=TermQuery("user_id", "u2")
        ),
        limit=10,
    )
    assert ids(client.search("mem", "mem_idx", filtered).rows)[0] == "r00042"
    assert calls == {"knn": 2, "parse_vector": 0}, "one matrix product per search; no vector decoded per row"


def test_next_token_carries_the_sort(seeded: OTSClient) -> None:
    """Like the service: later pages may omit the sort (the token has it) or repeat it; another sort is refused."""
    for i in range(12):
        seeded.put_row("mem", Row([("id", f"t{i:02d}")], [("user_id", "tina"), ("n", i)]))
    by_n_desc = Sort([FieldSort("n", SortOrder.DESC)])
    first = seeded.search("mem", "mem_idx", SearchQuery(TermQuery("user_id", "tina"), limit=5, sort=by_n_desc))
    assert ids(first.rows) == [f"t{i:02d}" for i in (11, 10, 9, 8, 7)] and first.next_token
    omitted = SearchQuery(TermQuery("user_id", "tina"), limit=5, next_token=first.next_token)
    assert ids(seeded.search("mem", "mem_idx", omitted).rows) == [f"t{i:02d}" for i in (6, 5, 4, 3, 2)]
    repeated = SearchQuery(TermQuery("user_id", "tina"), limit=5, next_token=first.next_token, sort=by_n_desc)
    assert ids(seeded.search("mem", "mem_idx", repeated).rows) == [f"t{i:02d}" for i in (6, 5, 4, 3, 2)]
    other = SearchQuery(TermQuery("user_id", "tina"), limit=5, next_token=first.next_token, sort=Sort([ScoreSort()]))
    with pytest.raises(OTSServiceError, match="does not match"):
        seeded.search("mem", "mem_idx", other)


def test_fault_after_the_write_loses_only_the_answer(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    emu = wire_level(tablestore_emulator)
    client = make_client(emu, retry_policy=FastRetry())
    create_table(client)
    emu.inject("PutRow", "drop_after", times=1)
    with pytest.raises(Exception):  # noqa: B017 - the connection drops after the row was written
        client.put_row("mem", Row([("id", "w")], [("v", 1)]))
    assert client.get_row("mem", [("id", "w")], max_version=1)[1] is not None
    with pytest.raises(ValueError, match="unknown fault"):
        emu.inject("PutRow", "nonsense_after")


def test_calls_are_counted_per_table(seeded: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    create_table(seeded, "other")
    tablestore_emulator.reset_counts()
    seeded.put_row("other", Row([("id", "x")], [("v", 1)]))
    seeded.get_row("mem", [("id", "a")], max_version=1)
    seeded.search("mem", "mem_idx", SearchQuery(TermQuery("user_id", "bob"), limit=5))
    request = BatchGetRowRequest()
    request.add(TableInBatchGetRowItem("mem", [[("id", "a")]], max_version=1))
    request.add(TableInBatchGetRowItem("other", [[("id", "x")]], max_version=1))
    seeded.batch_get_row(request)
    assert tablestore_emulator.calls_on("mem") == {"GetRow": 1, "Search": 1, "BatchGetRow": 1}
    assert tablestore_emulator.calls_on("other") == {"PutRow": 1, "BatchGetRow": 1}


# ---- documented rules (README.md in tests/tablestore_emulator lists each with its page) -----------------------
def test_filter_sees_only_the_columns_read(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """ "The reference columns used by a filter must be included in the read data; otherwise the filter cannot
    query the values of the reference columns": the filter sees such a column as missing."""
    create_table(client)
    client.put_row("mem", Row([("id", "r")], [("state", "active"), ("payload", "p")]))
    strict = SingleColumnCondition("state", "active", ComparatorType.EQUAL, pass_if_missing=False)
    lenient = SingleColumnCondition("state", "active", ComparatorType.EQUAL, pass_if_missing=True)

    def get(columns: list[str], flt: SingleColumnCondition) -> bool:
        return client.get_row("mem", [("id", "r")], columns, flt)[1] is not None

    def scan(columns: list[str], flt: SingleColumnCondition) -> int:
        rows = client.get_range("mem", Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)], columns, None, flt)[2]
        return len(rows)

    def batch(columns: list[str], flt: SingleColumnCondition) -> bool:
        request = BatchGetRowRequest()
        request.add(TableInBatchGetRowItem("mem", [[("id", "r")]], columns, flt, max_version=1))
        return client.batch_get_row(request).get_result_by_table("mem")[0].row is not None

    assert not get(["payload"], strict) and scan(["payload"], strict) == 0 and not batch(["payload"], strict)
    assert get(["payload"], lenient) and scan(["payload"], lenient) == 1 and batch(["payload"], lenient)
    assert get(["payload", "state"], strict) and scan(["payload", "state"], strict) == 1
    assert batch(["payload", "state"], strict)
    assert get([], strict) and scan([], strict) == 1  # no columns named: the whole row is read
    tablestore_emulator.rules.relax("filter_columns_read")
    assert get(["payload"], strict) and scan(["payload"], strict) == 1 and batch(["payload"], strict)


def _conditions(n: int) -> CompositeColumnCondition:
    """n single-column conditions, nested one level deep (the rule counts every condition of the tree)."""
    outer = CompositeColumnCondition(LogicalOperator.OR)
    inner = CompositeColumnCondition(LogicalOperator.AND)
    for i in range(n - 1):
        inner.add_sub_condition(SingleColumnCondition(f"c{i}", i, ComparatorType.EQUAL))
    outer.add_sub_condition(inner)
    outer.add_sub_condition(SingleColumnCondition("state", "x", ComparatorType.EQUAL))
    return outer


def test_filter_has_at_most_10_conditions(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    create_table(client)
    client.put_row("mem", Row([("id", "r")], [("state", "x")]))
    assert client.get_row("mem", [("id", "r")], None, _conditions(10))[1] is not None
    reads = (
        lambda flt: client.get_row("mem", [("id", "r")], None, flt),
        lambda flt: client.get_range("mem", Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)], None, None, flt),
    )
    for read in reads:
        with pytest.raises(OTSServiceError) as exc:
            read(_conditions(11))
        assert exc.value.code == "OTSParameterInvalid" and "filter conditions" in exc.value.message
    request = BatchGetRowRequest()
    request.add(TableInBatchGetRowItem("mem", [[("id", "r")]], None, _conditions(11), max_version=1))
    with pytest.raises(OTSServiceError) as exc:
        client.batch_get_row(request)
    assert exc.value.code == "OTSParameterInvalid"
    write = Condition(RowExistenceExpectation.IGNORE, _conditions(11))  # conditional writes: the same cap
    assert code_of(lambda: client.put_row("mem", Row([("id", "r")], [("state", "x")]), write)) == "OTSParameterInvalid"
    tablestore_emulator.rules.relax("filter_conditions")
    assert client.get_row("mem", [("id", "r")], None, _conditions(11))[1] is not None


def test_rules_are_strict_unless_relaxed_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.tablestore_emulator.rules import RELAX_ENV, RULES

    emu = TablestoreEmulator()
    assert emu.rules.relaxed == frozenset() and all(emu.rules.on(name) for name in RULES)
    monkeypatch.setenv(RELAX_ENV, "names, batch_get_rows")
    relaxed = TablestoreEmulator(relax=["conditions"])
    assert relaxed.rules.relaxed == {"names", "batch_get_rows", "conditions"}
    with pytest.raises(ValueError, match="unknown emulator rule"):
        TablestoreEmulator(relax=["filter_column_read"])  # a typo never passes for a relaxed rule


def code_of(call: object) -> str:
    with pytest.raises(OTSServiceError) as exc:
        call()  # type: ignore[operator]
    return str(exc.value.code)


MB = 1024 * 1024


def test_batch_and_row_size_limits(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """BatchWriteRow: 200 rows and 4 MB; BatchGetRow: 100 rows; one row write: 4 MB (2 MB attributes: test_row_errors).

    Few big requests: the SDK encodes PlainBuffer in Python at about 0.7 s per MB.
    """
    create_table(client)
    half = "x" * (2 * MB)  # the largest value allowed: two of them and a key make a request just over 4 MB

    def put_two() -> None:
        client.put_row("mem", Row([("id", "p")], [("a", half), ("b", half)]))

    def batch_two() -> object:
        req = BatchWriteRowRequest()
        rows = [PutRowItem(Row([("id", f"b{i}")], [("a", half)]), Condition("IGNORE")) for i in range(2)]
        req.add(TableInBatchWriteRowItem("mem", rows))
        return client.batch_write_row(req)

    def batch_rows(n: int) -> object:
        req = BatchWriteRowRequest()
        items = [PutRowItem(Row([("id", f"n{i}")], [("v", i)]), Condition("IGNORE")) for i in range(n)]
        req.add(TableInBatchWriteRowItem("mem", items))
        return client.batch_write_row(req)

    def get_rows(n: int) -> object:
        req = BatchGetRowRequest()
        req.add(TableInBatchGetRowItem("mem", [[("id", f"n{i}")] for i in range(n)], max_version=1))
        return client.batch_get_row(req)

    assert code_of(put_two) == "OTSParameterInvalid"
    assert code_of(batch_two) == "OTSParameterInvalid"
    assert code_of(lambda: batch_rows(201)) == "OTSParameterInvalid"
    assert code_of(lambda: get_rows(101)) == "OTSParameterInvalid"
    batch_rows(200), get_rows(100)  # the limits themselves are allowed
    tablestore_emulator.rules.relax("write_bytes", "batch_write_rows", "batch_get_rows")
    batch_rows(201)
    get_rows(101)


def test_primary_key_names_and_columns_to_get(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    create_table(client)
    long_key = [("id", "k" * 1025)]
    assert code_of(lambda: client.put_row("mem", Row(long_key, [("v", 1)]))) == "OTSParameterInvalid"
    client.put_row("mem", Row([("id", "k" * 1024)], [("v", 1)]))  # 1 KB is allowed
    assert code_of(lambda: client.put_row("mem", Row([("id", "r")], [("bad-name", 1)]))) == "OTSParameterInvalid"
    assert code_of(lambda: client.put_row("mem", Row([("id", "r")], [("9lives", 1)]))) == "OTSParameterInvalid"
    many = [f"c{i}" for i in range(129)]
    assert code_of(lambda: client.get_row("mem", [("id", "r")], many)) == "OTSParameterInvalid"
    assert client.get_row("mem", [("id", "r")], many[:128])[1] is None
    tablestore_emulator.rules.relax("pk_string_bytes", "names", "columns_to_get")
    client.put_row("mem", Row(long_key, [("bad-name", 1)]))
    create_table(client, "bad-table")
    assert client.get_row("mem", long_key, many)[1] is not None


def test_table_not_ready_window(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """A new table is "not usable for several seconds": row operations answer OTSTableNotReady (the code the SDKs
    retry; the documentation names none), table operations work, and after the window everything is served."""
    emu = tablestore_emulator
    emu.table_ready_seconds = 0.5
    client = make_client(emu, retry_policy=NoRetryPolicy())
    create_table(client)
    with pytest.raises(OTSServiceError) as exc:
        client.put_row("mem", Row([("id", "r")], [("v", 1)]))
    assert (exc.value.code, exc.value.http_status) == ("OTSTableNotReady", 503)
    assert code_of(lambda: client.get_row("mem", [("id", "r")])) == "OTSTableNotReady"
    scan = [("id", INF_MIN)], [("id", INF_MAX)]
    assert code_of(lambda: client.get_range("mem", Direction.FORWARD, *scan)) == "OTSTableNotReady"
    req = BatchWriteRowRequest()
    req.add(TableInBatchWriteRowItem("mem", [PutRowItem(Row([("id", "r")], [("v", 1)]), Condition("IGNORE"))]))
    assert client.batch_write_row(req).get_put()[1][0].error_code == "OTSTableNotReady"
    assert client.describe_table("mem").table_meta.table_name == "mem"  # metadata is there at once
    assert client.list_table() == ("mem",)

    def served() -> bool:
        try:
            client.put_row("mem", Row([("id", "r")], [("v", 1)]))
        except OTSServiceError as error:
            assert error.code == "OTSTableNotReady"
            return False
        return True

    wait_for(served, "the table to become ready")
    assert client.get_row("mem", [("id", "r")])[1] is not None
    # the SDK's own default policy retries the code, so a patient client never sees it
    create_table(client, "other")
    make_client(emu).put_row("other", Row([("id", "r")], [("v", 1)]))
    emu.rules.relax("table_not_ready")
    create_table(client, "third")
    client.put_row("third", Row([("id", "r")], [("v", 1)]))


def test_new_index_returns_nothing_until_initialized(tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """A new index "requires up to 1 minute to initialize": DescribeSearchIndex reports the FULL sync phase and
    Search answers no rows (what the service returns meanwhile is not documented); then INCR and every row."""
    emu = wire_level(tablestore_emulator)
    emu.index_ready_seconds = 0.5
    client = make_client(emu)
    create_table(client)
    seed_rows(client)
    create_index(client)
    query = SearchQuery(MatchAllQuery(), limit=10, get_total_count=True)
    resp = client.search("mem", "mem_idx", query)
    assert resp.rows == [] and resp.total_count == 0
    assert client.describe_search_index("mem", "mem_idx")[1].sync_phase == SyncPhase.FULL
    with pytest.raises(OTSServiceError):  # requests are still checked while it initializes
        client.search("mem", "mem_idx", SearchQuery(TermQuery("nope", "x")))
    wait_for(lambda: client.describe_search_index("mem", "mem_idx")[1].sync_phase == SyncPhase.INCR, "INCR")
    assert client.search("mem", "mem_idx", query).total_count == 4
    emu.index_ready_seconds = 60
    client.delete_search_index("mem", "mem_idx")
    create_index(client)
    emu.rules.relax("index_initializing")
    assert client.search("mem", "mem_idx", query).total_count == 4


def test_get_range_scans_at_most_5000_rows_or_4mb(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """With a filter that keeps nothing, a page is empty but carries the next key until the range is done."""
    from tests.tablestore_emulator.store import StoredRow

    create_table(client)
    store = tablestore_emulator.store
    with store.lock:  # loaded in-process: the wire path of writes is covered above
        for i in range(5_001):
            key = ((1, f"r{i:05d}"),)
            store.commit(store.tables["mem"], key, StoredRow(key, [("id", f"r{i:05d}")], {"v": (i, 0)}), 0.0)
    nothing = SingleColumnCondition("v", -1, ComparatorType.EQUAL, pass_if_missing=False)
    _, next_key, rows, _ = client.get_range(
        "mem", Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)], column_filter=nothing
    )
    assert rows == [] and next_key == [("id", "r05000")]
    _, next_key, rows, _ = client.get_range(
        "mem", Direction.FORWARD, next_key, [("id", INF_MAX)], column_filter=nothing
    )
    assert rows == [] and next_key is None
    _, next_key, rows, _ = client.get_range("mem", Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)])
    assert len(rows) == 5_000 and next_key == [("id", "r05000")]
    half = "h" * (MB // 2 + 1)
    with store.lock:  # 10 rows of ~0.5 MB in their own range: 4 MB are scanned after 8 of them
        for i in range(10):
            key = ((1, f"s{i}"),)
            store.commit(store.tables["mem"], key, StoredRow(key, [("id", f"s{i}")], {"big": (half, 0)}), 0.0)
    _, next_key, rows, _ = client.get_range(
        "mem", Direction.FORWARD, [("id", "s")], [("id", INF_MAX)], column_filter=nothing
    )
    assert rows == [] and next_key == [("id", "s8")]
    tablestore_emulator.rules.relax("get_range_scan")
    _, next_key, rows, _ = client.get_range(
        "mem", Direction.FORWARD, [("id", INF_MIN)], [("id", INF_MAX)], column_filter=nothing
    )
    assert rows == [] and next_key is None


def test_search_limits_offset_top_k_and_vectors(seeded: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    def search(query: object, columns: ColumnsToGet | None = None) -> object:
        return seeded.search("mem", "mem_idx", query, columns)

    everything = ColumnsToGet(return_type=ColumnReturnType.ALL)
    keys_only = ColumnsToGet(return_type=ColumnReturnType.NONE)
    from_index = ColumnsToGet(["user_id", "n"], ColumnReturnType.SPECIFIED)
    from_table = ColumnsToGet(["user_id", "not_indexed"], ColumnReturnType.SPECIFIED)
    assert code_of(lambda: search(SearchQuery(MatchAllQuery(), limit=101), everything)) == "OTSParameterInvalid"
    assert code_of(lambda: search(SearchQuery(MatchAllQuery(), limit=101), from_table)) == "OTSParameterInvalid"
    assert code_of(lambda: search(SearchQuery(MatchAllQuery(), limit=1001), keys_only)) == "OTSParameterInvalid"
    for columns in (keys_only, from_index):
        search(SearchQuery(MatchAllQuery(), limit=1000), columns)
    search(SearchQuery(MatchAllQuery(), limit=100), everything)
    deep = SearchQuery(MatchAllQuery(), offset=99_901, limit=100)
    assert code_of(lambda: search(deep, keys_only)) == "OTSParameterInvalid"
    knn = KnnVectorQuery("embedding", top_k=1001, float32_query_vector=[1.0, 0, 0, 0])
    assert code_of(lambda: search(SearchQuery(knn, limit=1))) == "OTSParameterInvalid"
    two_vectors = [
        FieldSchema(
            f"e{i}",
            FieldType.VECTOR,
            vector_options=VectorOptions(VectorDataType.VD_FLOAT_32, VectorMetricType.VM_COSINE, 4),
        )
        for i in range(2)
    ]
    assert (
        code_of(lambda: seeded.create_search_index("mem", "two", SearchIndexMeta(two_vectors))) == "OTSParameterInvalid"
    )
    widest = FieldSchema(
        "e",
        FieldType.VECTOR,
        vector_options=VectorOptions(VectorDataType.VD_FLOAT_32, VectorMetricType.VM_COSINE, 4096),
    )
    seeded.create_search_index("mem", "widest", SearchIndexMeta([widest]))  # 4,096 is allowed, 4,097 is not
    tablestore_emulator.rules.relax("search_limit", "search_offset", "knn_top_k", "vector_field")
    search(SearchQuery(MatchAllQuery(), limit=101), everything)
    search(deep, keys_only)
    search(SearchQuery(knn, limit=1))
    seeded.create_search_index("mem", "two", SearchIndexMeta(two_vectors))


def test_wildcard_pattern_is_measured_in_bytes(seeded: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    def wildcard(pattern: str) -> object:
        return seeded.search("mem", "mem_idx", SearchQuery(WildcardQuery("user_id", pattern), limit=10))

    wildcard("*" + "a" * 30 + "*")  # 32 bytes
    with pytest.raises(OTSServiceError) as exc:
        wildcard("*" + "绿" * 11 + "*")  # 13 characters, 35 bytes
    assert exc.value.code == "OTSParameterInvalid"
    assert exc.value.message == "length of field value is longer than 32 for the [WILDCARD_QUERY] query"
    wildcard("*" + "绿" * 10 + "*")  # 32 bytes
    tablestore_emulator.rules.relax("wildcard_pattern")
    wildcard("*" + "绿" * 11 + "*")


def test_row_and_column_conditions(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    create_table(client)
    client.put_row("mem", Row([("id", "r")], [("version", 1)]))
    exists = Condition(RowExistenceExpectation.EXPECT_EXIST)
    absent = Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
    stale = Condition(RowExistenceExpectation.IGNORE, SingleColumnCondition("version", 0, ComparatorType.EQUAL))
    attempts = (
        lambda: client.put_row("mem", Row([("id", "r")], [("version", 2)]), absent),
        lambda: client.update_row("mem", Row([("id", "nope")], {"PUT": [("version", 2)]}), exists),
        lambda: client.update_row("mem", Row([("id", "r")], {"PUT": [("version", 2)]}), stale),
        lambda: client.delete_row("mem", Row([("id", "nope")]), exists),
    )
    for attempt in attempts:
        with pytest.raises(OTSServiceError) as exc:
            attempt()
        assert (exc.value.code, exc.value.http_status) == ("OTSConditionCheckFail", 403)
    tablestore_emulator.rules.relax("conditions")
    for attempt in attempts:
        attempt()


def test_reserved_throughput_changes_at_most_every_two_minutes(
    client: OTSClient,
    tablestore_emulator: TablestoreEmulator,  # noqa: F811
) -> None:
    create_table(client)
    client.update_table("mem", reserved_throughput=ReservedThroughput(CapacityUnit(1, 1)))
    client.update_table("mem", TableOptions(time_to_live=86400))  # options are not throughput: no wait
    with pytest.raises(OTSServiceError) as exc:
        client.update_table("mem", reserved_throughput=ReservedThroughput(CapacityUnit(2, 2)))
    assert exc.value.code == "OTSTooFrequentReservedThroughputAdjustment"
    tablestore_emulator.rules.relax("update_table_frequency")
    client.update_table("mem", reserved_throughput=ReservedThroughput(CapacityUnit(2, 2)))


def test_throttling_and_5xx_bursts_on_demand(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """ "The next N calls of API X answer code C": what tests of our retry paths script (any OTS code, or a bare
    HTTP 5xx); OTSQuotaExhausted carries the message the SDKs need to treat it as retryable."""
    emu = tablestore_emulator
    create_table(client)
    no_retry = make_client(emu, retry_policy=NoRetryPolicy())
    emu.inject("PutRow", "OTSQuotaExhausted", times=2)
    emu.inject("PutRow", "http503", times=1)
    for expected in ("OTSQuotaExhausted", "OTSQuotaExhausted"):
        with pytest.raises(OTSServiceError) as exc:
            no_retry.put_row("mem", Row([("id", "r")], [("v", 1)]))
        assert (exc.value.code, exc.value.message) == (expected, "Too frequent table operations.")
    with pytest.raises(OTSClientError) as cexc:
        no_retry.put_row("mem", Row([("id", "r")], [("v", 1)]))
    assert cexc.value.get_http_status() == 503
    no_retry.put_row("mem", Row([("id", "r")], [("v", 1)]))  # the burst is over
    emu.inject("GetRow", "OTSTableNotReady", times=3)
    emu.reset_counts()
    assert make_client(emu, retry_policy=FastRetry()).get_row("mem", [("id", "r")])[1] is not None
    assert emu.counts["GetRow"] == 4


def test_write_columns_and_table_operation_rate(client: OTSClient, tablestore_emulator: TablestoreEmulator) -> None:  # noqa: F811
    """At most 1,024 attribute columns per row write; at most 10 table metadata operations per second per instance,
    refused with the message the SDKs retry on ("Too frequent table operations.")."""
    create_table(client)
    wide = [(f"c{i}", i) for i in range(1025)]
    assert code_of(lambda: client.put_row("mem", Row([("id", "w")], wide))) == "OTSParameterInvalid"
    client.put_row("mem", Row([("id", "w")], wide[:1024]))
    no_retry = make_client(tablestore_emulator, retry_policy=NoRetryPolicy())
    with pytest.raises(OTSServiceError) as exc:
        for _ in range(11):  # within one second on any machine: each call is a local round trip
            no_retry.describe_table("mem")
    assert (exc.value.code, exc.value.message) == ("OTSQuotaExhausted", "Too frequent table operations.")
    assert client.describe_table("mem").table_meta.table_name == "mem"  # the SDK's default policy retries it
    tablestore_emulator.rules.relax("write_columns", "table_operations_rate")
    client.put_row("mem", Row([("id", "w")], wide))
    for _ in range(30):
        no_retry.describe_table("mem")


def test_every_rule_is_in_the_readme() -> None:
    """The emulator's README lists every rule with its documentation page; a rule added here must be added there."""
    from pathlib import Path

    from tests.tablestore_emulator.rules import RULES

    readme = (Path(__file__).parent / "tablestore_emulator" / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    assert set(RULES) <= rows, sorted(set(RULES) - rows)
    for line in readme.splitlines():
        if line.startswith("| `") and line.split("|")[1].strip().strip("`") in RULES:
            assert "https://" in line, line  # each rule names the page it comes from
