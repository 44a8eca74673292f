# keybound firmware: the diagnosis of a lost state folder.  app.py loads it
# only when the AS answers without OSCORE (a rare path) and drops it again,
# so its code does not occupy the heap while the device runs.

import ace


def check(session, resp, name):
    """Stop the session when resp, the AS's unprotected 4.01, says "Replay
    detected" (RFC 8613 §7.4): the AS has seen this device's sequence
    numbers before, so every further request would reuse a nonce under the
    device's key.  Sets session.lost and raises ace.ACEError with it.
    """
    if bytes(resp.payload[:15]) == b"Replay detected":
        ctx = session.as_ctx
        session.lost = (
            "AS refused seq %d as a replay%s; stopped so no nonce is reused; "
            "new keys: keybound as client rekey %s"
            % (
                ctx.seq - 1,
                " (no state at boot: flash erased?)" if ctx.store.fresh else "",
                name,
            )
        )
        raise ace.ACEError(session.lost)
