"""The run row's counters: every page's delta adds up, whatever counters a later version of ``Counters`` has."""

from __future__ import annotations

from dataclasses import fields

import pytest

pytestmark = pytest.mark.usefixtures("clean_db")


def test_add_progress_sums_every_counter_and_keeps_the_last_known_total() -> None:
    from models.db import unit_of_work
    from models.runs import Counters, add_progress, get_run, start_full_run

    summed = [f.name for f in fields(Counters) if f.name != "total_results"]
    with unit_of_work() as session:
        run_id = start_full_run(session, trigger="test").id
    with unit_of_work() as session:
        add_progress(session, run_id, Counters(**{name: i + 1 for i, name in enumerate(summed)}, total_results=900))
    with unit_of_work() as session:
        add_progress(session, run_id, Counters(**dict.fromkeys(summed, 10)))
    with unit_of_work() as session:
        row = get_run(session, run_id)
        assert row is not None
        assert {name: getattr(row, name) for name in summed} == {name: i + 11 for i, name in enumerate(summed)}
        assert row.total_results == 900
