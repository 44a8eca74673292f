"""Where an ACE profile's security contexts go in aiocoap: the :class:`ContextInstaller` seam.

The core's :class:`~keybound.core.profiles.Profile` derives a stored token's
security context; a binding installs it where aiocoap finds it. The
:class:`~keybound.coap.resource_server_site.ResourceServerSite` keeps one installer
per ACE profile number and goes through it for every context it installs,
removes or saves at shutdown. The OSCORE profile's is
:class:`~keybound.coap.oscore_contexts.ContextTable`, which puts the OSCORE
contexts into the site's server credentials (RFC 9203 §4.3).
"""

from __future__ import annotations

from typing import Protocol

from keybound.core.token_store import ShutdownRecord, StoredToken


class ContextInstaller(Protocol):
    """Installs and removes the security contexts of one ACE profile's stored tokens."""

    @property
    def profile(self) -> int:
        """The ACE profile number (RFC 9200 §8.8) whose contexts this installs."""
        ...

    def install(
        self,
        entry: StoredToken,
        *,
        sender_mark: int = 0,
        restored: bool = False,
        shutdown: ShutdownRecord | None = None,
    ) -> object:
        """Install the context of ``entry``, replacing one for the same PoP key.

        ``restored``, ``sender_mark`` and ``shutdown`` describe a context persisted
        before a restart (RFC 8613 Appendix B.1).
        """
        ...

    def remove(self, key_id: bytes) -> None:
        """Remove the context of the token with PoP key ``key_id``, if any."""
        ...

    def shutdown_records(self) -> list[ShutdownRecord]:
        """What a clean shutdown saves of every installed context (RFC 8613 B.1.2)."""
        ...


__all__ = ["ContextInstaller"]
