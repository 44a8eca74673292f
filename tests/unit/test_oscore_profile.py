"""OSCORE profile (RFC 9203), OSCORE key derivation (RFC 8613 §3.2) and sequence-number state.

Vectors come from ``tests/vectors/rfc9203_*.json`` and ``rfc8613_appendix_c.json``;
each test id is the RFC section. Key derivation is also cross-checked against
aiocoap's OSCORE implementation.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keybound.core import cbor
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.errors import (
    CapacityExceeded,
    DecodeError,
    InvalidRequest,
    KeyboundError,
    UnsupportedPopKey,
)
from keybound.core.oscore_derivation import (
    DerivedContext,
    build_master_salt,
    derive_context_parameters,
    derive_keys,
    kdf_info,
)
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.oscore_sequence import (
    MAX_SEQUENCE_NUMBER,
    SequenceNumberExhausted,
    SequenceNumberReservation,
)
from tests.helpers.paths import VECTORS

h = bytes.fromhex


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return data


RFC8613_C = _load("rfc8613_appendix_c.json")["vectors"]
RFC9203_MATERIAL = _load("rfc9203_oscore_input_material.json")
RFC9203_AUTHZ = _load("rfc9203_authz_info.json")
RFC9203_SETUP = _load("rfc9203_oscore_setup.json")

MS = h("f9af838368e353e78888e1426bd94e6f")
N1 = h("018a278f7faab55a")
N2 = h("25a8991cd700ac01")


def _ctx_from_vector(v: dict[str, Any]) -> DerivedContext:
    return DerivedContext(
        master_secret=h(v["master_secret"]),
        master_salt=h(v["master_salt"]) if v["master_salt"] is not None else b"",
        id_context=h(v["id_context"]) if v["id_context"] is not None else None,
        sender_id=h(v["sender_id"]),
        recipient_id=h(v["recipient_id"]),
    )


# ---- aiocoap as an independent implementation ----------------------------------------------


def _aiocoap_keys(ctx: DerivedContext) -> tuple[bytes, bytes, bytes]:
    """Derive with aiocoap's own RFC 8613 §3.2 code for the same parameters."""
    from aiocoap import oscore

    class _Context(oscore.SecurityContextUtils):  # type: ignore[misc]
        pass

    names = {10: "AES-CCM-16-64-128", 30: "AES-CCM-16-128-128", 1: "A128GCM", 3: "A256GCM"}
    theirs = _Context()
    theirs.alg_aead = oscore.algorithms[names[ctx.alg]]
    theirs.hashfun = oscore.hashfunctions["sha256"]
    theirs.id_context = ctx.id_context
    theirs.sender_id = ctx.sender_id
    theirs.recipient_id = ctx.recipient_id
    theirs.derive_keys(ctx.master_salt, ctx.master_secret)
    return theirs.sender_key, theirs.recipient_key, theirs.common_iv


# ---- RFC 8613 Appendix C ----------------------------------------------------------------


@pytest.mark.parametrize("v", RFC8613_C, ids=[v["section"] for v in RFC8613_C])
def test_rfc8613_appendix_c_key_derivation(v: dict[str, Any]) -> None:
    ctx = _ctx_from_vector(v)
    keys = derive_keys(ctx)
    assert keys.sender_key == h(v["sender_key"]), f"{v['section']}: Sender Key disagrees"
    assert keys.recipient_key == h(v["recipient_key"]), f"{v['section']}: Recipient Key disagrees"
    assert keys.common_iv == h(v["common_iv"]), f"{v['section']}: Common IV disagrees"


@pytest.mark.parametrize("v", RFC8613_C, ids=[v["section"] for v in RFC8613_C])
def test_rfc8613_appendix_c_info(v: dict[str, Any]) -> None:
    id_context = h(v["id_context"]) if v["id_context"] is not None else None
    assert kdf_info(h(v["sender_id"]), id_context, 10, "Key", 16) == h(v["info_sender_key"])
    assert kdf_info(h(v["recipient_id"]), id_context, 10, "Key", 16) == h(v["info_recipient_key"])
    assert kdf_info(b"", id_context, 10, "IV", 13) == h(v["info_common_iv"])


@pytest.mark.parametrize("v", RFC8613_C, ids=[v["section"] for v in RFC8613_C])
def test_rfc8613_appendix_c_matches_aiocoap(v: dict[str, Any]) -> None:
    ctx = _ctx_from_vector(v)
    assert tuple(derive_keys(ctx)) == _aiocoap_keys(ctx)


# ---- RFC 9203 §3.2, §3.2.1: OSCORE_Input_Material ---------------------------------------


@pytest.mark.parametrize(
    "v", RFC9203_MATERIAL["cbor"], ids=[v["section"] for v in RFC9203_MATERIAL["cbor"]]
)
def test_rfc9203_material_cbor(v: dict[str, Any]) -> None:
    if v["claims_hex"] is not None:
        claims = cbor.loads(h(v["claims_hex"]))
        osc_map = claims[8][4]
    else:
        osc_map = cbor.loads(h(v["osc_hex"]))
    material = OscoreInputMaterial.from_cbor_map(osc_map)
    assert material.id == h(v["osc"]["id"])
    assert material.ms == h(v["osc"]["ms"])
    assert (material.version, material.hkdf, material.alg, material.salt) == (None,) * 4
    assert material.context_id is None
    assert cbor.dumps(material.to_cbor_map()) == h(v["osc_hex"])
    # Defaults of RFC 8613 §3.2 apply to what is absent.
    assert material.aead.id == 10
    assert material.hkdf_value == 5


@pytest.mark.parametrize(
    "v", RFC9203_MATERIAL["json"], ids=[v["section"] for v in RFC9203_MATERIAL["json"]]
)
def test_rfc9203_material_json(v: dict[str, Any]) -> None:
    material = OscoreInputMaterial.from_dict(v["osc"])
    assert material.id == h(v["expect"]["id"])
    assert material.ms == h(v["expect"]["ms"])
    assert material.alg == v["expect"]["alg"]
    assert material.to_dict() == v["osc"]


def test_material_full_round_trip() -> None:
    material = OscoreInputMaterial(
        id=b"\x02", ms=MS, version=1, hkdf=5, alg=30, salt=b"\x11\x22", context_id=b"\xaa"
    )
    m = material.to_cbor_map()
    assert m == {0: b"\x02", 1: 1, 2: MS, 3: 5, 4: 30, 5: b"\x11\x22", 6: b"\xaa"}
    assert OscoreInputMaterial.from_cbor_map(cbor.loads(cbor.dumps(m))) == material
    d = material.to_dict()
    assert d["alg"] == "AES-CCM-16-128-128"
    assert d["hkdf"] == "HMAC 256/256"
    assert OscoreInputMaterial.from_dict(json.loads(json.dumps(d))) == material


def test_material_accepts_registry_names_and_standard_base64() -> None:
    material = OscoreInputMaterial.from_cbor_map(
        {0: b"\x01", 2: MS, 3: "HMAC 256/256", 4: "AES-CCM-16-64-128"}
    )
    assert (material.hkdf, material.alg) == (5, 10)
    # RFC 9203 §3.2.1 says "base64-encoded"; both alphabets, padded or not, are read.
    assert OscoreInputMaterial.from_dict({"id": "AQ==", "ms": "+a+Dg2jjU+eIiOFCa9lObw"}).ms == MS


def test_secrets_stay_out_of_reprs() -> None:
    material = OscoreInputMaterial(id=b"\x01", ms=MS)
    ctx = derive_context_parameters(material, N1, N2, b"\x01", b"\x02")
    keys = derive_keys(ctx)
    for text in (repr(material), repr(ctx)):
        assert MS.hex() not in text
        assert repr(MS) not in text
    assert keys.sender_key.hex() not in repr(keys)
    assert repr(keys.recipient_key) not in repr(keys)


def test_equality_covers_the_secret() -> None:
    material = OscoreInputMaterial(id=b"\x01", ms=MS)
    assert material == OscoreInputMaterial(id=b"\x01", ms=MS)
    assert material != OscoreInputMaterial(id=b"\x01", ms=bytes(16))
    assert material != OscoreInputMaterial(id=b"\x02", ms=MS)
    assert hash(material) == hash(OscoreInputMaterial(id=b"\x01", ms=MS))
    ctx = derive_context_parameters(material, N1, N2, b"\x01", b"\x02")
    other = derive_context_parameters(
        OscoreInputMaterial(id=b"\x01", ms=bytes(16)), N1, N2, b"\x01", b"\x02"
    )
    assert ctx == derive_context_parameters(material, N1, N2, b"\x01", b"\x02")
    assert ctx != other


BAD_MATERIAL: list[tuple[str, dict[Any, Any], type[KeyboundError], str]] = [
    ("absent ms", {0: b"\x01"}, InvalidRequest, "ms"),
    ("absent id", {2: MS}, InvalidRequest, "id"),
    ("ms as text", {0: b"\x01", 2: MS.hex()}, InvalidRequest, "ms"),
    ("ms too short", {0: b"\x01", 2: b"\x01" * 8}, InvalidRequest, "ms"),
    ("ms too long", {0: b"\x01", 2: b"\x01" * 65}, InvalidRequest, "ms"),
    ("id as int", {0: 1, 2: MS}, InvalidRequest, "id"),
    ("version as text", {0: b"\x01", 1: "1", 2: MS}, InvalidRequest, "version"),
    ("version as bool", {0: b"\x01", 1: True, 2: MS}, InvalidRequest, "version"),
    ("version 2", {0: b"\x01", 1: 2, 2: MS}, UnsupportedPopKey, "version"),
    ("hkdf direct+HKDF-SHA-256", {0: b"\x01", 2: MS, 3: -10}, UnsupportedPopKey, "hkdf"),
    ("hkdf HMAC 256/64", {0: b"\x01", 2: MS, 3: 4}, UnsupportedPopKey, "hkdf"),
    ("hkdf unknown name", {0: b"\x01", 2: MS, 3: "HKDF SHA-256"}, UnsupportedPopKey, "hkdf"),
    ("hkdf as bytes", {0: b"\x01", 2: MS, 3: b"\x05"}, InvalidRequest, "hkdf"),
    ("alg unknown", {0: b"\x01", 2: MS, 4: 999}, UnsupportedPopKey, "alg"),
    ("alg a MAC", {0: b"\x01", 2: MS, 4: 5}, UnsupportedPopKey, "alg"),
    ("alg as float", {0: b"\x01", 2: MS, 4: 10.0}, InvalidRequest, "alg"),
    ("alg as bool", {0: b"\x01", 2: MS, 4: True}, InvalidRequest, "alg"),
    ("salt as list", {0: b"\x01", 2: MS, 5: [1]}, InvalidRequest, "salt"),
    ("contextId too long", {0: b"\x01", 2: MS, 6: b"\x00" * 65}, InvalidRequest, "contextId"),
    ("unknown label 7", {0: b"\x01", 2: MS, 7: b""}, InvalidRequest, "osc"),
    ("text label", {0: b"\x01", 2: MS, "ms": MS}, InvalidRequest, "osc"),
]


@pytest.mark.parametrize(
    ("m", "error", "claim"), [c[1:] for c in BAD_MATERIAL], ids=[c[0] for c in BAD_MATERIAL]
)
def test_material_refuses(m: dict[Any, Any], error: type[KeyboundError], claim: str) -> None:
    with pytest.raises(error) as info:
        OscoreInputMaterial.from_cbor_map(m)
    assert info.value.claim == claim


def test_material_refuses_non_map_and_bad_json() -> None:
    with pytest.raises(InvalidRequest):
        OscoreInputMaterial.from_cbor_map([b"\x01", MS])
    with pytest.raises(InvalidRequest):
        OscoreInputMaterial.from_dict({"id": "AQ", "ms": "not base64!"})
    with pytest.raises(InvalidRequest):
        OscoreInputMaterial.from_dict({"id": "AQ", "ms": "-a+Dg2jjU-eIiOFCa9lObw"})  # mixed
    with pytest.raises(InvalidRequest):
        OscoreInputMaterial.from_dict({"id": "AQ", "ms": "x" * 300})
    with pytest.raises(InvalidRequest):
        OscoreInputMaterial.from_dict({"id": "AQ", "ms": "-a-Dg2jjU-eIiOFCa9lObw", "kid": "AQ"})
    with pytest.raises(UnsupportedPopKey):
        OscoreInputMaterial(id=b"\x01", ms=MS, hkdf=-10)


# ---- RFC 9203 §4.1, §4.2: /authz-info payloads ------------------------------------------


def test_rfc9203_authz_info_request() -> None:
    v = RFC9203_AUTHZ["request"]
    request = AuthzInfoRequest(
        access_token=h(v["access_token_prefix"]),
        nonce1=h(v["nonce1"]),
        client_recipient_id=h(v["ace_client_recipientid"]),
    )
    assert request.to_cbor_map() == {1: h(v["access_token_prefix"]), 40: N1, 43: h("1645")}
    assert AuthzInfoRequest.decode(request.encode()) == request


def test_rfc9203_authz_info_response() -> None:
    v = RFC9203_AUTHZ["response"]
    response = AuthzInfoResponse(
        nonce2=h(v["nonce2"]), server_recipient_id=h(v["ace_server_recipientid"])
    )
    assert response.encode() == h(v["payload_hex"])
    assert AuthzInfoResponse.decode(h(v["payload_hex"])) == response


def test_authz_info_update_of_access_rights() -> None:
    # RFC 9203 §4.1, §4.2: under OSCORE only the token counts; nonce and ID are ignored.
    payload = cbor.dumps({1: b"token", 40: b"short", 43: 5})
    request = AuthzInfoRequest.decode(payload, protected=True)
    assert request == AuthzInfoRequest(access_token=b"token")
    with pytest.raises(InvalidRequest):
        AuthzInfoRequest.decode(payload)


BAD_REQUESTS: list[tuple[str, object, type[KeyboundError]]] = [
    ("no nonce1", {1: b"t", 43: b"\x01"}, InvalidRequest),
    ("no id1", {1: b"t", 40: N1}, InvalidRequest),
    ("no token", {40: N1, 43: b"\x01"}, InvalidRequest),
    ("token as text", {1: "t", 40: N1, 43: b"\x01"}, InvalidRequest),
    ("nonce1 as text", {1: b"t", 40: N1.hex(), 43: b"\x01"}, InvalidRequest),
    ("nonce1 too short", {1: b"t", 40: b"\x01" * 7, 43: b"\x01"}, InvalidRequest),
    ("nonce1 too long", {1: b"t", 40: b"\x01" * 33, 43: b"\x01"}, InvalidRequest),
    ("id1 as int", {1: b"t", 40: N1, 43: 1}, InvalidRequest),
    ("id1 of 8 bytes", {1: b"t", 40: N1, 43: b"\x01" * 8}, InvalidRequest),
    ("unknown parameter", {1: b"t", 40: N1, 43: b"\x01", 5: "aud"}, InvalidRequest),
    ("not a map", [b"t", N1, b"\x01"], DecodeError),
]


@pytest.mark.parametrize(
    ("m", "error"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_authz_info_request_refuses(m: object, error: type[KeyboundError]) -> None:
    with pytest.raises(error):
        AuthzInfoRequest.decode(cbor.dumps(m))


def test_authz_info_refuses_bad_cbor_and_oversize() -> None:
    with pytest.raises(DecodeError):
        AuthzInfoRequest.decode(b"\xa3\x01")
    with pytest.raises(InvalidRequest):
        AuthzInfoRequest.decode(cbor.dumps({1: b"\x00" * 20000, 40: N1, 43: b"\x01"}))
    with pytest.raises(InvalidRequest):
        AuthzInfoResponse.decode(cbor.dumps({42: N2}))
    with pytest.raises(InvalidRequest):
        AuthzInfoResponse.decode(cbor.dumps({42: N2, 44: b"\x00", 1: b""}))


# ---- RFC 9203 §4.3: OSCORE setup --------------------------------------------------------


@pytest.mark.parametrize(
    "v", RFC9203_SETUP["master_salt"], ids=[v["section"] for v in RFC9203_SETUP["master_salt"]]
)
def test_rfc9203_master_salt(v: dict[str, Any]) -> None:
    salt = build_master_salt(h(v["input_salt"]), h(v["nonce1"]), h(v["nonce2"]))
    assert salt == h(v["master_salt"])
    material = OscoreInputMaterial(id=b"\x01", ms=MS, salt=h(v["input_salt"]))
    ctx = derive_context_parameters(material, h(v["nonce1"]), h(v["nonce2"]), b"\x01", b"\x02")
    assert ctx.master_salt == h(v["master_salt"])


def _setup_context(role: str) -> DerivedContext:
    v = RFC9203_SETUP["context"]
    material = OscoreInputMaterial(id=h(v["material"]["id"]), ms=h(v["material"]["ms"]))
    return derive_context_parameters(
        material,
        h(v["nonce1"]),
        h(v["nonce2"]),
        h(v["ace_client_recipientid"]),
        h(v["ace_server_recipientid"]),
        role="client" if role == "client" else "rs",
    )


@pytest.mark.parametrize("role", ["client", "rs"])
def test_rfc9203_context_parameters(role: str) -> None:
    v = RFC9203_SETUP["context"]
    ctx = _setup_context(role)
    assert ctx.master_salt == h(v["master_salt"])
    assert ctx.sender_id == h(v[role]["sender_id"])
    assert ctx.recipient_id == h(v[role]["recipient_id"])
    assert ctx.master_secret == MS
    assert ctx.id_context is None
    assert (ctx.alg, ctx.hkdf) == (10, 5)
    assert tuple(derive_keys(ctx)) == _aiocoap_keys(ctx)


def test_client_and_rs_mirror_each_other() -> None:
    client, rs = derive_keys(_setup_context("client")), derive_keys(_setup_context("rs"))
    assert client.sender_key == rs.recipient_key
    assert client.recipient_key == rs.sender_key
    assert client.common_iv == rs.common_iv
    assert client.sender_key != client.recipient_key


def test_context_id_and_algorithm_flow_into_the_context() -> None:
    material = OscoreInputMaterial(id=b"\x01", ms=MS, alg=1, context_id=b"\xc0\xff")
    ctx = derive_context_parameters(material, N1, N2, b"\x01", b"\x02", role="rs")
    assert (ctx.id_context, ctx.alg, ctx.sender_id, ctx.recipient_id) == (
        b"\xc0\xff",
        1,
        b"\x01",
        b"\x02",
    )
    keys = derive_keys(ctx)
    assert (len(keys.sender_key), len(keys.common_iv)) == (16, 12)
    assert tuple(keys) == _aiocoap_keys(ctx)


def test_equal_recipient_ids_are_refused() -> None:
    material = OscoreInputMaterial(id=b"\x01", ms=MS)
    with pytest.raises(InvalidRequest):
        derive_context_parameters(material, N1, N2, b"\x16\x45", b"\x16\x45")
    with pytest.raises(InvalidRequest):
        derive_context_parameters(material, N1, N2, b"", b"", role="rs")
    with pytest.raises(InvalidRequest):
        DerivedContext(
            master_secret=MS, master_salt=b"", id_context=None, sender_id=b"", recipient_id=b""
        )


def test_recipient_id_length_follows_the_aead_nonce() -> None:
    # RFC 8613 §3.3: at most nonce length - 6 bytes: 7 for AES-CCM-16-64-128, 6 for A128GCM.
    ccm = OscoreInputMaterial(id=b"\x01", ms=MS)
    derive_context_parameters(ccm, N1, N2, b"\x01" * 7, b"\x02")
    with pytest.raises(InvalidRequest):
        derive_context_parameters(ccm, N1, N2, b"\x01" * 8, b"\x02")
    gcm = OscoreInputMaterial(id=b"\x01", ms=MS, alg=1)
    with pytest.raises(InvalidRequest):
        derive_context_parameters(gcm, N1, N2, b"\x01", b"\x02" * 7)


def test_derivation_refuses_bad_nonces_and_types() -> None:
    material = OscoreInputMaterial(id=b"\x01", ms=MS)
    with pytest.raises(InvalidRequest):
        derive_context_parameters(material, b"\x01" * 4, N2, b"\x01", b"\x02")
    with pytest.raises(InvalidRequest):
        derive_context_parameters(material, N1, N2.hex(), b"\x01", b"\x02")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        derive_context_parameters(material, N1, N2, 1, b"\x02")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        derive_context_parameters(material, N1, N2, b"\x01", b"\x02", role="as")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    ms=st.binary(min_size=16, max_size=64),
    salt=st.none() | st.binary(max_size=16),
    context_id=st.none() | st.binary(max_size=8),
    nonce1=st.binary(min_size=8, max_size=32),
    nonce2=st.binary(min_size=8, max_size=32),
    id1=st.binary(max_size=7),
    id2=st.binary(max_size=7),
    alg=st.sampled_from([10, 30]),
)
def test_derivation_matches_aiocoap_and_mirrors(
    ms: bytes,
    salt: bytes | None,
    context_id: bytes | None,
    nonce1: bytes,
    nonce2: bytes,
    id1: bytes,
    id2: bytes,
    alg: int,
) -> None:
    material = OscoreInputMaterial(id=b"\x07", ms=ms, alg=alg, salt=salt, context_id=context_id)
    if id1 == id2:
        with pytest.raises(InvalidRequest):
            derive_context_parameters(material, nonce1, nonce2, id1, id2)
        return
    client = derive_context_parameters(material, nonce1, nonce2, id1, id2, role="client")
    rs = derive_context_parameters(material, nonce1, nonce2, id1, id2, role="rs")
    client_keys, rs_keys = derive_keys(client), derive_keys(rs)
    assert tuple(client_keys) == _aiocoap_keys(client)
    assert (client_keys.sender_key, client_keys.recipient_key) == (
        rs_keys.recipient_key,
        rs_keys.sender_key,
    )
    assert client_keys.common_iv == rs_keys.common_iv


# ---- RFC 8613 Appendix B.1.1: sequence numbers across reboots ----------------------------


def test_reservation_asks_for_a_mark_once_per_chunk() -> None:
    r = SequenceNumberReservation(persisted_mark=0, chunk=4)
    assert r.next() == (0, 4)
    with pytest.raises(RuntimeError):
        r.next()  # the mark must be confirmed first
    r.confirm_persisted(4)
    assert [r.next() for _ in range(3)] == [(1, None), (2, None), (3, None)]
    assert r.next() == (4, 8)
    assert r.pending_mark == 8
    with pytest.raises(RuntimeError):
        r.confirm_persisted(9)
    r.confirm_persisted(8)
    assert r.durable_mark == 8


def test_reservation_restarts_at_the_persisted_mark() -> None:
    r = SequenceNumberReservation(persisted_mark=8, chunk=4)
    assert r.peek == 8
    assert r.next() == (8, 12)


def test_reservation_overflow() -> None:
    r = SequenceNumberReservation(persisted_mark=MAX_SEQUENCE_NUMBER - 1, chunk=10)
    assert r.next() == (MAX_SEQUENCE_NUMBER - 1, MAX_SEQUENCE_NUMBER + 1)
    r.confirm_persisted(MAX_SEQUENCE_NUMBER + 1)
    assert r.next() == (MAX_SEQUENCE_NUMBER, None)
    with pytest.raises(SequenceNumberExhausted) as info:
        r.next()
    assert isinstance(info.value, CapacityExceeded)
    with pytest.raises(SequenceNumberExhausted):
        SequenceNumberReservation(persisted_mark=MAX_SEQUENCE_NUMBER + 1).next()
    with pytest.raises(ValueError):
        SequenceNumberReservation(persisted_mark=MAX_SEQUENCE_NUMBER + 2)
    with pytest.raises(ValueError):
        SequenceNumberReservation(persisted_mark=0, chunk=0)


_CRASH_POINTS = ["before_persist", "after_persist", "after_use"]


@settings(max_examples=200)
@given(
    chunk=st.integers(min_value=1, max_value=16),
    runs=st.lists(
        st.tuples(st.integers(min_value=0, max_value=40), st.sampled_from(_CRASH_POINTS)),
        max_size=12,
    ),
)
def test_no_sequence_number_is_used_twice_across_crashes(
    chunk: int, runs: list[tuple[int, str]]
) -> None:
    storage = 0  # what survives a crash
    used: list[int] = []
    for length, crash_point in runs:
        r = SequenceNumberReservation(persisted_mark=storage, chunk=chunk)
        for step in range(length):
            last = step == length - 1
            seqno, mark = r.next()
            if mark is not None:
                if last and crash_point == "before_persist":
                    break
                storage = mark
                if last and crash_point == "after_persist":
                    break
                r.confirm_persisted(mark)
            assert seqno < storage, "a number was used beyond the persisted mark"
            used.append(seqno)
        # the process dies here: only `storage` is kept
    assert len(used) == len(set(used))
    assert used == sorted(used)
