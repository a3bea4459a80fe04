from __future__ import annotations

import pytest

from tasks.arguments import MAX_ID, positive_id


@pytest.mark.parametrize("value", [1, 42, MAX_ID])
def test_usable_ids_pass(value: int) -> None:
    assert positive_id(value) == value


@pytest.mark.parametrize(
    "value", [0, -1, MAX_ID + 1, True, False, None, "1", "1; DROP TABLE users", 1.0, [1], {"id": 1}]
)
def test_malformed_ids_are_refused(value: object) -> None:
    assert positive_id(value) is None
