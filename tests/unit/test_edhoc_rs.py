"""The RS core for the EDHOC and OSCORE profile: verification, storage, supersession."""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from typing import Any

import pytest

from keybound.core import cbor
from keybound.core.errors import IncompatibleAceProfiles, InvalidRequest, InvalidToken
from keybound.core.resource_server import AuthzInfoOutcome, ResourceServer
from tests.helpers.edhoc import EDHOC, OSCORE, Party, mint_edhoc
from tests.helpers.rs import Keys, material, mint, rs_policy

NOW = int(time.time())


def make_rs(keys: Keys, profiles: frozenset[int] = frozenset({OSCORE, EDHOC})) -> ResourceServer:
    return ResourceServer(rs_policy(keys, profiles=profiles))


def authz_info(rs: ResourceServer, payload: dict[int, object]) -> AuthzInfoOutcome:
    flow: Generator[Any, Any, AuthzInfoOutcome] = rs.authz_info(
        cbor.dumps(payload), over=None, random=os.urandom, now=NOW, monotonic=0.0
    )
    try:
        next(flow)
    except StopIteration as done:
        return done.value
    raise AssertionError("no introspection was asked for")


def test_a_signed_kccs_token_is_stored_without_an_oscore_context() -> None:
    keys, dev = Keys(), Party.make(b"\x2b", "dev")
    rs = make_rs(keys)
    outcome = authz_info(rs, {1: mint_edhoc(keys, dev.ccs, now=NOW)})
    assert outcome.response == b""
    stored = outcome.stored
    assert stored.context is None
    assert stored.lookup is None
    assert stored.verified.profile == EDHOC
    assert stored.key_id == dev.ccs.fingerprint
    assert outcome.persist.token == stored.verified.raw  # persisted for a restart
    restored = make_rs(keys).restore(outcome.persist, now=NOW, monotonic=0.0)
    assert restored.verified.material == stored.verified.material
    assert rs.live(dev.ccs.fingerprint, now=NOW, monotonic=0.0) is stored


def test_a_new_token_for_the_same_credential_supersedes_the_old() -> None:
    keys, dev = Keys(), Party.make(b"\x2b", "dev")
    rs = make_rs(keys)
    first = authz_info(rs, {1: mint_edhoc(keys, dev.ccs, now=NOW)}).stored
    second = authz_info(rs, {1: mint_edhoc(keys, dev.ccs, now=NOW)})
    assert second.superseded is first
    assert first.key_id in second.drop
    assert len(rs.store) == 1


def test_the_edhoc_profile_takes_the_token_alone() -> None:
    keys, dev = Keys(), Party.make(b"\x2b", "dev")
    with pytest.raises(InvalidRequest, match="alone"):
        authz_info(
            make_rs(keys), {1: mint_edhoc(keys, dev.ccs, now=NOW), 40: os.urandom(8), 43: b"\x01"}
        )


def test_an_rs_of_the_oscore_profile_alone_refuses_a_kccs_token() -> None:
    keys, dev = Keys(), Party.make(b"\x2b", "dev")
    rs = make_rs(keys, frozenset({OSCORE}))
    with pytest.raises(InvalidToken, match="encrypted"):  # signed only: refused at step 1
        rs.verify(mint_edhoc(keys, dev.ccs, now=NOW), now=NOW, monotonic=0.0)


def test_an_oscore_profile_token_must_still_be_encrypted_at_an_rs_of_both() -> None:
    """The OSCORE profile's token carries the master secret: in the clear it is refused
    even where signed-only EDHOC tokens are taken."""
    from keybound.core import cwt
    from keybound.core.token import AccessToken

    keys = Keys()
    rs = make_rs(keys)
    claims = cwt.decode(mint(keys, material(), now=NOW), keys.token_key).token
    signed_only = cwt.encode(claims, cwt.Sign1(keys.as_key))
    with pytest.raises(InvalidToken, match="encrypted"):
        rs.verify(signed_only, now=NOW, monotonic=0.0)
    assert isinstance(claims, AccessToken)


def test_a_kccs_token_claiming_the_oscore_profile_is_incompatible() -> None:
    keys, dev = Keys(), Party.make(b"\x2b", "dev")
    from keybound.core import cwt

    token = cwt.decode(mint_edhoc(keys, dev.ccs, now=NOW), keys.as_key.public_key()).token
    relabelled = cwt.encode(
        type(token)(**{**token.__dict__, "ace_profile": OSCORE}),
        cwt.Nested(cwt.Sign1(keys.as_key), cwt.Encrypt0(keys.token_key)),
        random_bytes=os.urandom,
    )
    with pytest.raises(IncompatibleAceProfiles, match="osc"):
        make_rs(keys).verify(relabelled, now=NOW, monotonic=0.0)
