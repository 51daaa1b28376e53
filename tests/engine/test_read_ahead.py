"""Read-ahead of a listing (stage.read_ahead): the next page is asked for while the current
one is staged, never more than one page ahead, in order, with a page's error raised where that
page is wanted, and a listing left early is closed with its pending page cancelled."""
from __future__ import annotations

import asyncio

import pytest

from daemon.engine.stage import read_ahead


class Listing:
    def __init__(self, pages: int, fail_at: int | None = None) -> None:
        self.pages, self.fail_at = pages, fail_at
        self.asked: list[int] = []
        self.closed = False
        self.hold = asyncio.Event()           # set: the system answers the pending page

    async def __call__(self):
        try:
            for i in range(self.pages):
                self.asked.append(i)
                if i > 0:
                    await self.hold.wait()
                    self.hold.clear()
                if i == self.fail_at:
                    raise RuntimeError(f"page {i}: HTTP 500")
                yield [i]
        finally:
            self.closed = True


async def test_the_next_page_is_asked_for_while_the_current_one_is_handled():
    listing = Listing(3)
    it = read_ahead(listing())
    assert await anext(it) == [0]
    await asyncio.sleep(0)                    # the loop turns once: the handling of page 0
    assert listing.asked == [0, 1]            # page 1 is on its way, page 2 is not
    listing.hold.set()
    assert await anext(it) == [1]
    await asyncio.sleep(0)
    assert listing.asked == [0, 1, 2]
    listing.hold.set()
    assert await anext(it) == [2]
    with pytest.raises(StopAsyncIteration):
        await anext(it)
    assert listing.closed


async def test_a_page_that_fails_raises_where_it_is_wanted_after_the_pages_before_it():
    listing = Listing(3, fail_at=1)
    got = []
    with pytest.raises(RuntimeError, match="page 1: HTTP 500"):
        async for page in read_ahead(listing()):
            got.append(page)
            listing.hold.set()
    assert got == [[0]]
    assert listing.closed


async def test_a_listing_left_early_is_closed_and_its_pending_page_cancelled():
    listing = Listing(5)
    it = read_ahead(listing())
    assert await anext(it) == [0]
    await asyncio.sleep(0)
    assert listing.asked == [0, 1]            # waiting for the system's answer
    await it.aclose()
    assert listing.closed                     # the request in flight was cancelled
    assert listing.asked == [0, 1]
