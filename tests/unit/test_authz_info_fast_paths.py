"""The fast paths of ``/authz-info`` against the code they replaced.

Each was restructured for speed and must give what the straightforward code gives:
the 2.01 payload written head by head against the map encoded whole, the HKDF
``info`` and the PoP key id written by keybound's encoder against cbor2's, and the
known scope tokens gathered once per declaration against a new declaration.
"""

from __future__ import annotations

import hashlib
import os
import random

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.core import cbor
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.errors import InvalidScope, KeyboundError
from keybound.core.oscore_derivation import (
    DerivedContext,
    context_parameters,
    derive_keys,
    kdf_info,
)
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy
from keybound.core.scope import ResourceScopes
from keybound.core.token_store import pop_key_id
from tests.helpers.rs import AS_URI, AUDIENCE, ISSUER, Keys, material, mint

CASES = 3000
NOW = 1_700_000_000


def _bytes(rng: random.Random, low: int, high: int) -> bytes:
    return rng.randbytes(rng.randint(low, high))


def test_the_response_is_the_map_encoded_whole() -> None:
    rng = random.Random(42)
    for _ in range(CASES):
        response = AuthzInfoResponse(_bytes(rng, 8, 32), _bytes(rng, 0, 7))
        whole = cbor.dumps({42: response.nonce2, 44: response.server_recipient_id})
        assert response.encode() == whole
        assert response.encode() == cbor2.dumps(response.to_cbor_map(), canonical=True)
        assert AuthzInfoResponse.decode(response.encode()) == response


def test_the_response_with_long_values_is_the_map_encoded_whole() -> None:
    for size in (23, 24, 255, 256, 1000):
        response = AuthzInfoResponse(os.urandom(size), os.urandom(size))
        assert response.encode() == cbor2.dumps(response.to_cbor_map(), canonical=True)


def test_a_request_read_is_the_request_the_checking_constructor_makes() -> None:
    """read_exchange makes the request without __post_init__: the same request."""
    rng = random.Random(48)
    for _ in range(CASES // 3):
        made = AuthzInfoRequest(_bytes(rng, 1, 300), _bytes(rng, 8, 32), _bytes(rng, 0, 7))
        read = AuthzInfoRequest.decode(made.encode())
        assert read == made
        assert (read.access_token, read.nonce1, read.client_recipient_id) == (
            made.access_token,
            made.nonce1,
            made.client_recipient_id,
        )


def test_kdf_info_is_what_cbor2_writes() -> None:
    rng = random.Random(43)
    for _ in range(CASES):
        id_ = _bytes(rng, 0, 7)
        id_context = None if rng.random() < 0.5 else _bytes(rng, 0, 40)
        alg = rng.choice([1, 3, 10, 12, 24, 30, 33, -65531, 2**16])
        type_ = rng.choice(["Key", "IV"])
        length = rng.choice([7, 13, 16, 32, 300])
        expected = cbor2.dumps([id_, id_context, alg, type_, length])
        assert kdf_info(id_, id_context, alg, type_, length) == expected  # type: ignore[arg-type]


def test_one_extract_gives_the_keys_of_three_full_hkdfs() -> None:
    """RFC 8613 §3.2.1 as written (HKDF three times) against one extract and three expands."""
    rng = random.Random(45)
    for _ in range(CASES // 3):
        alg, key_bytes, iv_bytes = rng.choice([(10, 16, 13), (30, 16, 13), (1, 16, 12)])
        ctx = DerivedContext(
            master_secret=_bytes(rng, 1, 32),
            master_salt=_bytes(rng, 0, 80),  # empty included: HKDF's zero salt
            id_context=None if rng.random() < 0.5 else _bytes(rng, 0, 16),
            sender_id=b"\x01" + _bytes(rng, 0, 5),
            recipient_id=b"\x02" + _bytes(rng, 0, 5),
            alg=alg,
        )

        def full(
            id_: bytes, kind: str, length: int, c: DerivedContext = ctx, a: int = alg
        ) -> bytes:
            info = cbor2.dumps([id_, c.id_context, a, kind, length])
            hkdf = HKDF(hashes.SHA256(), length, c.master_salt, info)
            return hkdf.derive(c.master_secret)

        keys = derive_keys(ctx)
        assert keys.sender_key == full(ctx.sender_id, "Key", key_bytes)
        assert keys.recipient_key == full(ctx.recipient_id, "Key", key_bytes)
        assert keys.common_iv == full(b"", "IV", iv_bytes)


def test_pop_key_ids_stay_what_they_were() -> None:
    """A persisted key id must name the same key after the change (same hash input)."""
    rng = random.Random(44)
    for _ in range(CASES):
        context_id = None if rng.random() < 0.5 else _bytes(rng, 0, 16)
        mat = OscoreInputMaterial(
            id=_bytes(rng, 1, 8), ms=_bytes(rng, 16, 32), context_id=context_id
        )
        old = cbor2.dumps(["keybound-pop-key", mat.id, mat.context_id or b"", mat.ms])
        assert pop_key_id(mat) == hashlib.sha256(old).digest()


def _fields(ctx: DerivedContext) -> tuple[object, ...]:
    return tuple(getattr(ctx, name) for name in DerivedContext.__dataclass_fields__)


def test_context_parameters_are_what_the_checked_constructor_makes() -> None:
    """context_parameters builds DerivedContext without __post_init__: the same object."""
    rng = random.Random(46)
    for _ in range(CASES):
        mat = OscoreInputMaterial(
            id=_bytes(rng, 0, 8),
            ms=_bytes(rng, 16, 32),
            alg=rng.choice([None, 1, 10, 30]),
            salt=None if rng.random() < 0.5 else _bytes(rng, 0, 16),
            context_id=None if rng.random() < 0.5 else _bytes(rng, 0, 16),
        )
        nonce1, nonce2 = _bytes(rng, 8, 32), _bytes(rng, 8, 32)
        id1, id2 = _bytes(rng, 0, 7), _bytes(rng, 0, 7)
        role = rng.choice(["client", "rs"])
        too_long = max(len(id1), len(id2)) > (6 if mat.alg in (1,) else 7)
        if too_long or id1 == id2:
            with pytest.raises(KeyboundError, match="recipientId"):
                context_parameters(mat, nonce1, nonce2, id1, id2, role=role)  # type: ignore[arg-type]
            continue
        made = context_parameters(mat, nonce1, nonce2, id1, id2, role=role)  # type: ignore[arg-type]
        checked = DerivedContext(
            master_secret=made.master_secret,
            master_salt=made.master_salt,
            id_context=made.id_context,
            sender_id=made.sender_id,
            recipient_id=made.recipient_id,
            alg=made.alg,
            hkdf=made.hkdf,
        )
        assert made == checked
        assert _fields(made) == _fields(checked)
        assert type(made.alg) is int
        assert type(made.hkdf) is int


def _material_map(rng: random.Random) -> dict[object, object]:
    """An osc map, valid or not in one of the ways from_cbor_map and __post_init__ check."""
    m: dict[object, object] = {0: _bytes(rng, 0, 8), 2: _bytes(rng, 16, 32)}
    optional: dict[int, list[object]] = {
        1: [1, 2, True, "1"],
        3: [5, "HMAC 256/256", 4, -10, 7.0],
        4: [10, 30, "AES-CCM-16-64-128", 5, 99, True],
        5: [b"", os.urandom(8), os.urandom(65), "salt"],
        6: [b"", os.urandom(8), os.urandom(65), 6],
    }
    for key, values in optional.items():
        if rng.random() < 0.5:
            m[key] = rng.choice(values)
    if rng.random() < 0.2:
        m[rng.choice([0, 2])] = rng.choice([b"", os.urandom(70), "id", os.urandom(10)])
    return m


def _checked_material(m: dict[object, object]) -> OscoreInputMaterial:
    """The material of ``m`` through the dataclass constructor (its __post_init__ checks)."""
    raw = OscoreInputMaterial.from_cbor_map(m)
    return OscoreInputMaterial(
        id=raw.id,
        ms=raw.ms,
        version=raw.version,
        hkdf=raw.hkdf,
        alg=raw.alg,
        salt=raw.salt,
        context_id=raw.context_id,
    )


def _outcome(read: object, m: dict[object, object]) -> object:
    try:
        made = read(m)  # type: ignore[operator]
    except KeyboundError as exc:
        return (type(exc), exc.description, exc.claim)
    return (made, made._public(), made.ms)


def test_osc_maps_are_read_as_the_checked_constructor_reads_them() -> None:
    """from_cbor_map checks each parameter once: the same material, or the same error."""
    rng = random.Random(47)
    refused = 0
    for _ in range(CASES):
        m = _material_map(rng)
        fast = _outcome(OscoreInputMaterial.from_cbor_map, m)
        assert fast == _outcome(_checked_material, m)
        refused += isinstance(fast[0], type)  # type: ignore[index]
    assert 0 < refused < CASES


def _rs(keys: Keys, resources: dict[str, dict[str, list[str]]]) -> ResourceServer:
    return ResourceServer(
        RsPolicy(
            audience=AUDIENCE,
            as_uri=AS_URI,
            token_keys=(keys.token_key,),
            issuer=ISSUER,
            resources=ResourceScopes.from_dict(resources),
        )
    )


def test_a_scope_token_declared_later_is_known() -> None:
    keys = Keys()
    rs = _rs(keys, {"/temp": {"GET": ["temp.read"]}})
    token = mint(keys, material(), scope="led.read", now=NOW)
    with pytest.raises(InvalidScope):
        rs.verify(token, now=NOW, monotonic=0.0)
    rs.declare("/led", {"GET": ["led.read"]})
    assert rs.verify(token, now=NOW, monotonic=0.0).token.scope is not None


def test_a_scope_token_of_a_replaced_policy_is_forgotten() -> None:
    keys = Keys()
    rs = _rs(keys, {"/temp": {"GET": ["temp.read"]}, "/led": {"GET": ["led.read"]}})
    token = mint(keys, material(), scope="led.read", now=NOW)
    rs.verify(token, now=NOW, monotonic=0.0)
    rs.policy = _rs(keys, {"/temp": {"GET": ["temp.read"]}}).policy
    with pytest.raises(InvalidScope):
        rs.verify(token, now=NOW, monotonic=0.0)
