"""The gate converts a book's matrices row by row, on first use, and loses no mutation doing so."""

from __future__ import annotations

import numpy as np
import pytest

from gate_builders import gate_state, order, positions
from risklib.core.gate import check_and_record, check_batch
from risklib.core.gate._state import LazyRows


def test_rows_convert_on_first_read_and_mutations_reach_the_matrix():
    rows = LazyRows(np.arange(6, dtype=float).reshape(3, 2))
    assert dict.__len__(rows) == 0 and len(rows) == 3
    rows[1][0] += 10.0
    assert dict.__len__(rows) == 1
    assert rows.matrix().tolist() == [[0.0, 1.0], [12.0, 3.0], [4.0, 5.0]]
    with pytest.raises(IndexError):
        rows[3]


def test_a_single_check_converts_only_the_rows_of_its_account():
    pos = positions(("A1", "swing", "EUR/USD", 1000), ("A2", "swing", "EUR/USD", -500), ("A3", "swing", "USD/JPY", 700))
    state = gate_state(accounts=("A1", "A2", "A3"), pos=pos)
    assert dict.__len__(state.position) == 0
    decision = check_and_record(order(account="A2", qty=100.0), state)
    assert decision.approved
    converted = set()
    for rows in (state.position, state.pending, state.pending_reduce, state.inst_gross, state.strat_gross):
        converted |= {state.accounts[r] for r in dict.keys(rows)}
    assert converted == {"A2"}


def test_single_checks_then_the_batch_form_see_the_same_pending_exposure():
    pos = positions(("A1", "swing", "EUR/USD", 1000), ("A2", "swing", "EUR/USD", -500))
    one = gate_state(accounts=("A1", "A2"), pos=pos)
    many = gate_state(accounts=("A1", "A2"), pos=pos)
    orders = [order(account="A1", qty=300.0), order(account="A2", side="SELL", qty=200.0)]
    for o in orders:
        check_and_record(o, one)
    check_batch(orders, many)
    assert one.pending == many.pending
    a1, eur = one.account_index["A1"], one.instrument_index["EUR/USD"]
    assert one.arrays()["pending"][a1, eur] == pytest.approx(300.0)
