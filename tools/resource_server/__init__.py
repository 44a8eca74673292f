"""keybound.tools.resource_server: the RS daemon (configuration, state, demo
resources, systemd unit).

The public names for a resource server of your own, each from its home module:
:func:`load_bundle` (:mod:`~keybound.tools.resource_server.daemon`), :class:`RsBundle`
(:mod:`keybound.tools.bundles`) and :class:`SqliteRsState`
(:mod:`~keybound.tools.resource_server.state`).
"""

from keybound.tools.bundles import RsBundle
from keybound.tools.resource_server.daemon import load_bundle
from keybound.tools.resource_server.state import SqliteRsState

__all__ = ["RsBundle", "SqliteRsState", "load_bundle"]
