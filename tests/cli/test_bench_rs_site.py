"""The ``rs`` bench group's site: what a round POSTs is taken back before the next one."""

from __future__ import annotations

from keybound.tools.bench.fixtures import Keys
from keybound.tools.bench.resource_server import _Site, quiet_rs


def test_take_back_empties_the_site_of_the_rounds_tokens() -> None:
    site = _Site(Keys.generate(), capacity=16)
    site.fill(2)  # tokens that stay, as the 10,000-stored figure's
    site.prepare(5)
    with quiet_rs():
        for _ in range(5):
            site.post()
        assert len(site.site.rs.store) == 7
        site.take_back()
    assert len(site.site.rs.store) == 2
    # the next round starts with nothing of this one left to take back
    assert site.posted == []
