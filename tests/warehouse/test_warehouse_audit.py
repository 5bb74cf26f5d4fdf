"""The audit log's hash chain: any edit or deletion of history is detected and named."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risklib.adapters.warehouse._audit import CHECKPOINT_ACTION, GENESIS, ChainVerifier, chain
from risklib.warehouse import Warehouse

from warehouse_builders import T0, cycle

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _entries(n: int) -> list[dict]:
    return [
        {"actor": f"op{i % 3}", "action": "act", "subject": f"s{i}", "detail": {"i": i, "v": [1, 2]}, "at": AT + timedelta(seconds=i)}
        for i in range(n)
    ]


def _verify(rows: pl.DataFrame):
    v = ChainVerifier()
    v.feed(rows)
    return v.result()


# --- pure chain ----------------------------------------------------------------------


def test_fresh_chain_verifies():
    # Arrange
    rows = chain(_entries(5), head_seq=0, head_hash=GENESIS, default_at=AT)
    # Act
    result = _verify(rows)
    # Assert
    assert (result.ok, result.n_entries, result.first_seq, result.last_seq) == (True, 5, 1, 5)


def test_chain_continues_from_head():
    # Arrange
    first = chain(_entries(3), head_seq=0, head_hash=GENESIS, default_at=AT)
    # Act
    second = chain(_entries(2), head_seq=3, head_hash=first["hash"][-1], default_at=AT)
    # Assert
    assert _verify(pl.concat([first, second])).ok
    assert second["seq"].to_list() == [4, 5]


def test_entry_without_actor_is_refused():
    with pytest.raises(ValueError, match=r"actor must be a non-empty string"):
        chain([{"actor": "", "action": "x"}], head_seq=0, head_hash=GENESIS, default_at=AT)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=12),
    data=st.data(),
    column=st.sampled_from(["at", "actor", "action", "subject", "detail"]),
)
def test_any_edit_is_detected_at_the_edited_entry(n, data, column):
    # Arrange
    rows = chain(_entries(n), head_seq=0, head_hash=GENESIS, default_at=AT)
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    edits = {
        "at": pl.col("at") + pl.duration(microseconds=1),
        "actor": pl.lit("mallory"),
        "action": pl.lit("nothing-happened"),
        "subject": pl.lit("other"),
        "detail": pl.lit('{"i":-1}'),
    }
    tampered = rows.with_columns(
        pl.when(pl.int_range(pl.len()) == i).then(edits[column]).otherwise(pl.col(column)).alias(column)
    )
    # Act
    result = _verify(tampered)
    # Assert
    assert not result.ok
    assert result.first_bad_seq == i + 1


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=3, max_value=12), data=st.data())
def test_any_deletion_is_detected(n, data):
    # Arrange
    rows = chain(_entries(n), head_seq=0, head_hash=GENESIS, default_at=AT)
    i = data.draw(st.integers(min_value=0, max_value=n - 2))  # deleting the newest entry needs an external head
    # Act
    result = _verify(rows.filter(pl.int_range(pl.len()) != i))
    # Assert
    assert not result.ok
    assert result.first_bad_seq == i + 1


def test_rehashed_edit_still_breaks_the_next_link():
    # Arrange: the attacker fixes the edited entry's own hash but not the rest of the chain
    rows = chain(_entries(4), head_seq=0, head_hash=GENESIS, default_at=AT)
    forged = chain([{"actor": "mallory", "action": "act", "subject": "s1", "detail": {}, "at": AT}],
                   head_seq=1, head_hash=rows["hash"][0], default_at=AT)
    tampered = pl.concat([rows.slice(0, 1), forged, rows.slice(2)])
    # Act
    result = _verify(tampered)
    # Assert
    assert (result.ok, result.first_bad_seq) == (False, 3)
    assert "prev_hash does not match the hash of seq 2" in result.problem


def test_removed_prefix_needs_a_checkpoint():
    # Arrange
    rows = chain(_entries(6), head_seq=0, head_hash=GENESIS, default_at=AT)
    # Act
    result = _verify(rows.slice(3))
    # Assert
    assert (result.ok, result.first_bad_seq) == (False, 1)
    assert result.problem == "entries 1..3 are missing and no checkpoint vouches for their removal"


def test_checkpoint_anchors_a_removed_prefix():
    # Arrange
    rows = chain(_entries(6), head_seq=0, head_hash=GENESIS, default_at=AT)
    checkpoint = chain(
        [{"actor": "retention", "action": CHECKPOINT_ACTION, "detail": {"removed_through_seq": 3, "removed_through_hash": rows["hash"][2]}}],
        head_seq=6, head_hash=rows["hash"][-1], default_at=AT,
    )
    # Act
    result = _verify(pl.concat([rows.slice(3), checkpoint]))
    # Assert
    assert (result.ok, result.anchored_at, result.first_seq) == (True, 7, 4)


# --- in the warehouse ----------------------------------------------------------------


def _tamper(path, sql: str, params: list) -> None:
    """Edit history behind the warehouse's back, the way an intruder with file access would."""
    w = Warehouse.open(path, migrate=False)
    w.con.execute(sql, params)
    w.close()


@pytest.fixture
def filled(wh, wh_path):
    for k in range(3):
        wh.write_cycle(cycle(f"c{k}", T0 + timedelta(minutes=k)))
    wh.close()
    return wh_path


def test_warehouse_chain_verifies_after_writes(filled):
    # Act
    with Warehouse.open(filled, read_only=True) as ro:
        result = ro.verify()
    # Assert
    assert result.ok
    assert result.summary().startswith("audit chain OK:")


def test_edited_entry_in_warehouse_is_named(filled):
    # Arrange
    with Warehouse.open(filled, read_only=True) as ro:
        seq = ro.query("SELECT min(seq) AS s FROM audit_log WHERE action = 'cycle.record'")["s"][0]
    _tamper(filled, "UPDATE audit_log SET detail = '{\"status\":\"completed\"}' WHERE seq = ?", [seq])
    # Act
    with Warehouse.open(filled, read_only=True) as ro:
        result = ro.verify()
    # Assert
    assert (result.ok, result.first_bad_seq) == (False, seq)
    assert result.summary() == f"audit chain BROKEN at seq {seq}: stored hash does not match the entry's content (entry edited)"


def test_deleted_entry_in_warehouse_is_named(filled):
    # Arrange
    with Warehouse.open(filled, read_only=True) as ro:
        seq = ro.query("SELECT min(seq) AS s FROM audit_log WHERE action = 'evaluate'")["s"][0]
    _tamper(filled, "DELETE FROM audit_log WHERE seq = ?", [seq])
    # Act
    with Warehouse.open(filled, read_only=True) as ro:
        result = ro.verify()
    # Assert
    assert (result.ok, result.first_bad_seq) == (False, seq)
    assert "entry missing" in result.problem


def test_verify_reads_in_batches(filled):
    # Act: tiny batches exercise the resume-by-seq path
    with Warehouse.open(filled, read_only=True) as ro:
        small, whole = ro.verify(batch_rows=2), ro.verify()
    # Assert
    assert small == whole
