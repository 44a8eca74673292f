"""The token revocation list (RFC 9770) in the AS database, on SQLite and PostgreSQL:
what revocation and expiry add and remove, who sees which hashes, the bounded update
collections, and one consistent TRL for several AS processes on one database."""

from __future__ import annotations

from keybound.core import cbor, trl
from keybound.core.authz_store import IssuedToken
from keybound.core.numbers.trl import TrlParameter
from keybound.core.trl import TrlLimits
from keybound.tools.authz_server.storage import SqlAuthzStore

NOW = 1_800_000_000
KEY = bytes(range(16))


def _store(url: str) -> SqlAuthzStore:
    store = SqlAuthzStore.init(url)
    store.add_resource_server(
        "door", "coap://door.example", scopes=["open"], token_key=KEY, token_kid=b"k", now=NOW
    )
    store.add_resource_server(
        "lamp", "coap://lamp.example", scopes=["on"], token_key=KEY, token_kid=b"k", now=NOW
    )
    return store


def _issue(
    store: SqlAuthzStore,
    name: str,
    *,
    client: str = "dev-1",
    audience: str = "coap://door.example",
    exp: int | None = NOW + 3600,
    exi: int | None = None,
) -> IssuedToken:
    token = IssuedToken(
        cti=name.encode(),
        client_id=client,
        audience=audience,
        scope="open",
        format="cwt",
        iat=NOW,
        exp=exp,
        exi=exi,
        sequence=1 if exi is not None else None,
        token_hash=trl.response_token_hash(name.encode()),
    )
    store.record_token(token)
    return token


def _hashes(store: SqlAuthzStore, requester: str) -> frozenset[bytes]:
    return store.trl_view(requester)[0]


def test_a_revoked_token_is_listed_for_its_client_and_its_rs_only(db_url: str) -> None:
    with _store(db_url) as store:
        t1 = _issue(store, "t1")
        _issue(store, "t2", client="dev-2", audience="coap://lamp.example")
        assert store.trl_version() == 0
        store.revoke(b"t1", now=NOW + 10)
        assert store.trl_version() == 1
        assert _hashes(store, "client:dev-1") == {t1.token_hash}
        assert _hashes(store, "rs:door") == {t1.token_hash}
        # Neither another device nor the other RS is shown the hash (RFC 9770 §5, §6).
        assert _hashes(store, "client:dev-2") == frozenset()
        assert _hashes(store, "rs:lamp") == frozenset()
        _, collection = store.trl_view("client:dev-1")
        assert [(i.index, i.removed, i.added) for i in collection.items] == [
            (0, (), (t1.token_hash,))
        ]
        assert store.trl_view("client:dev-2")[1].items == ()


def test_revoking_twice_is_one_update_and_an_expired_token_is_not_listed(db_url: str) -> None:
    with _store(db_url) as store:
        _issue(store, "t1")
        _issue(store, "old", exp=NOW - 1)
        store.revoke(b"t1", now=NOW)
        store.revoke(b"t1", now=NOW + 5)
        store.revoke(b"old", now=NOW)
        assert store.trl_version() == 1
        assert len(_hashes(store, "client:dev-1")) == 1


def test_expiry_takes_revoked_tokens_off_in_one_update(db_url: str) -> None:
    with _store(db_url) as store:
        t1, t2 = _issue(store, "t1", exp=NOW + 100), _issue(store, "t2", exp=NOW + 100)
        _issue(store, "t3", exp=NOW + 900)
        for cti in (b"t1", b"t2", b"t3"):
            store.revoke(cti, now=NOW)
        assert store.expire_trl(NOW + 99) == 0
        assert store.expire_trl(NOW + 100) == 2
        assert store.expire_trl(NOW + 100) == 0
        hashes, collection = store.trl_view("rs:door")
        assert hashes == {trl.response_token_hash(b"t3")}
        last = collection.items[-1]
        assert set(last.removed) == {t1.token_hash, t2.token_hash}
        assert last.added == ()
        # Listed tokens are not purged before they leave the list; then they may be.
        assert store.purge_expired_tokens(NOW + 1000) == 2  # t1 and t2; t3 is still listed
        assert store.get_token(b"t1") is None
        assert store.get_token(b"t3") is not None


def test_a_listed_token_is_not_purged(db_url: str) -> None:
    with _store(db_url) as store:
        _issue(store, "t1", exp=NOW + 100)
        store.revoke(b"t1", now=NOW)
        assert store.purge_expired_tokens(NOW + 200) == 0  # still on the TRL
        store.expire_trl(NOW + 200)
        assert store.purge_expired_tokens(NOW + 200) == 1


def test_an_exi_token_leaves_exi_seconds_after_revocation(db_url: str) -> None:
    with _store(db_url) as store:
        _issue(store, "t1", exp=None, exi=300)
        store.revoke(b"t1", now=NOW + 50)
        assert store.expire_trl(NOW + 349) == 0
        assert store.expire_trl(NOW + 350) == 1


def test_update_collections_keep_max_n_items_and_wrap_their_index(db_url: str) -> None:
    with _store(db_url) as store:
        store.trl_limits = TrlLimits(max_n=3, max_diff_batch=2, max_index=3)
        for n in range(6):
            _issue(store, f"t{n}")
            store.revoke(f"t{n}".encode(), now=NOW)
        hashes, collection = store.trl_view("client:dev-1")
        assert len(hashes) == 6
        assert [item.index for item in collection.items] == [3, 0, 1]  # seq 3, 4, 5 mod 4
        assert collection.wrapped
        payload = trl.answer(["diff=0"], lambda: hashes, collection, store.trl_limits)
        decoded = cbor.loads(payload)
        assert decoded[TrlParameter.CURSOR] == 0  # the eldest two of three: indexes 3 and 0
        assert decoded[TrlParameter.MORE] is True
        assert store.trl_marks(["client:dev-1", "rs:lamp"]) == {"client:dev-1": 5, "rs:lamp": -1}


def test_two_as_processes_share_one_trl(db_url: str) -> None:
    with _store(db_url) as first, SqlAuthzStore.open(db_url) as second:
        _issue(first, "t1")
        _issue(second, "t2")
        second.revoke(b"t1", now=NOW)
        first.revoke(b"t2", now=NOW)
        assert first.trl_version() == second.trl_version() == 2
        assert first.trl_view("rs:door") == second.trl_view("rs:door")
        assert [i.index for i in first.trl_view("rs:door")[1].items] == [0, 1]
