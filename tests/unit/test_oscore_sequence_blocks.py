"""Sender Sequence Numbers from blocks a shared store reserves (RFC 8613 Appendix B.1.1)."""

from __future__ import annotations

import pytest

from keybound.core.oscore_sequence import (
    MAX_SEQUENCE_NUMBER,
    SequenceBlocks,
    SequenceNumberExhausted,
)


def test_nothing_is_issued_before_a_block() -> None:
    assert SequenceBlocks().next() is None


def test_numbers_come_from_the_block_then_a_new_one_is_asked_for() -> None:
    blocks = SequenceBlocks(first_chunk=2, max_chunk=8)
    assert blocks.chunk == 2
    blocks.add_block(2, 2)
    assert [blocks.next(), blocks.next(), blocks.next()] == [0, 1, None]
    assert blocks.chunk == 4  # sizes double
    blocks.add_block(10, 4)  # another process took [2, 6)
    assert [blocks.next() for _ in range(5)] == [6, 7, 8, 9, None]
    assert blocks.chunk == 8
    blocks.add_block(18, 8)
    assert blocks.chunk == 8  # up to max_chunk


def test_an_overlapping_block_is_refused() -> None:
    blocks = SequenceBlocks(first_chunk=4)
    blocks.add_block(4, 4)
    assert blocks.next() == 0
    assert blocks.next() == 1
    with pytest.raises(RuntimeError):
        blocks.add_block(5, 4)  # [1, 5): 1 was used
    assert blocks.next() == 2  # the refused block changed nothing


def test_past_the_40_bit_space_it_is_exhausted() -> None:
    blocks = SequenceBlocks(first_chunk=2)
    blocks.add_block(MAX_SEQUENCE_NUMBER + 2, 2)
    assert blocks.next() == MAX_SEQUENCE_NUMBER
    with pytest.raises(SequenceNumberExhausted):
        blocks.next()


@pytest.mark.parametrize(("first", "most"), [(0, 4), (8, 4), (1, 2**21)])
def test_chunk_sizes_are_bounded(first: int, most: int) -> None:
    with pytest.raises(ValueError):
        SequenceBlocks(first_chunk=first, max_chunk=most)
