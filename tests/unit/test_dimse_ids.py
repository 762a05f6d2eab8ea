"""The message ID allocator (PS3.7 §9.1.1.1: Message ID is US, so 1-65535)."""

from __future__ import annotations

import pytest

from dicomnet.dimse.ids import MAX_MESSAGE_ID, MessageIds, MessageIdsExhausted


def test_cycles_through_1_to_65535_without_zero_or_65536() -> None:
    ids = MessageIds()
    got = [ids.allocate() for _ in range(MAX_MESSAGE_ID + 3)]
    assert got[:3] == [1, 2, 3]
    assert got[MAX_MESSAGE_ID - 1] == 65535
    assert got[MAX_MESSAGE_ID:] == [1, 2, 3]
    assert min(got) == 1 and max(got) == 65535


def test_skips_ids_still_outstanding_across_the_wrap() -> None:
    ids = MessageIds(start=65534)
    assert ids.allocate({65535, 1}) == 65534
    assert ids.allocate({65535, 1}) == 2
    assert ids() == 3


def test_all_outstanding_is_an_error_and_bad_start_is_refused() -> None:
    ids = MessageIds()
    with pytest.raises(MessageIdsExhausted):
        ids.allocate(range(1, MAX_MESSAGE_ID + 1))
    for start in (0, 65536):
        with pytest.raises(ValueError):
            MessageIds(start)
