"""The OSCORE context derivation against its reference copy: same contexts, keys and errors.

``kdf_info``, the Master Salt, the context parameters and ``derive_keys`` (RFC 8613
§3.2.1, RFC 9203 §4.3) were put together by concatenation and one-block HKDF-Expand
for speed; tests/helpers/derivation_reference.py is the module as it was. Inputs are
random parameters, valid and broken (wrong types, unknown AEADs, bools for integers,
identifiers too long, equal identifiers). The default run compares some 25,000 calls;
``KEYBOUND_DIFF_DERIVATION=400000`` runs that many inputs.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from functools import partial
from typing import Any

from keybound.core import oscore_derivation as mine
from keybound.core.errors import KeyboundError
from keybound.core.oscore_material import OscoreInputMaterial
from tests.helpers import derivation_reference as ref

#: Inputs of the default run; each goes through up to four comparisons.
DEFAULT_INPUTS = 8_000
INPUTS = int(os.environ.get("KEYBOUND_DIFF_DERIVATION", DEFAULT_INPUTS))

_ALGS: tuple[Any, ...] = (
    *(10, 10, 10, 30, 1, 3, 24, 11, 12, 13, 31, 4, 5, -7, 0, 99, True, False, 10.0, None),
    *("AES-CCM-16-64-128", "A128GCM", "nope"),
)
_HKDFS: tuple[Any, ...] = (5, 5, 5, 4, -10, 6, 0, True, "HMAC 256/256", "HMAC 256/64", "x", 5.0)


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """("ok", value) or ("error", class, error, ACE code, claim) or ("crash", class, text)."""
    try:
        return ("ok", fn())
    except KeyboundError as exc:
        return ("error", type(exc), exc.error, exc.ace_code, exc.claim)
    except Exception as exc:
        return ("crash", type(exc), str(exc)[:200])


def _context_view(ctx: Any) -> tuple[Any, ...]:
    return (ctx.master_secret, ctx.master_salt, ctx.id_context, ctx.sender_id,
            ctx.recipient_id, ctx.alg, ctx.hkdf, ctx.aead)  # fmt: skip


def _same(a: tuple[Any, ...], b: tuple[Any, ...], view: Callable[[Any], Any]) -> bool:
    if a[0] != b[0] or ("crash" in (a[0], b[0]) and a[:2] != b[:2]):
        return False
    if a[0] == "ok":
        return bool(view(a[1]) == view(b[1]))
    return a == b


def _blob(rng: random.Random, top: int = 12) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 1, 2, 6, 7, 8, top, rng.randrange(0, 300))))


def _given(value: Any) -> Any:
    return value


def _maybe(rng: random.Random, make: Callable[[], Any], odd: float = 0.05) -> Any:
    """``make()``, or now and then something of another type."""
    if rng.random() < odd:
        return rng.choice((None, "text", 7, [b"x"], bytearray(b"ab"), True))
    return make()


class Report:
    def __init__(self) -> None:
        self.cases = 0
        self.accepted = 0
        self.mismatches: list[str] = []

    def check(
        self,
        what: str,
        fns: tuple[Callable[..., Any], Callable[..., Any]],
        *args: Any,
        view: Callable[[Any], Any] = lambda v: v,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Call the current function and its reference on the same arguments; compare."""
        a = outcome(partial(fns[0], *args, **kwargs))
        b = outcome(partial(fns[1], *args, **kwargs))
        self.cases += 1
        self.accepted += a[0] == "ok"
        if not _same(a, b, view):
            self.mismatches.append(f"{what}{args!r}: {a!r} != reference {b!r}")
        return a


def _material(rng: random.Random, alg: Any, salt: bytes | None) -> tuple[Any, ...]:
    return outcome(
        partial(
            OscoreInputMaterial,
            id=_blob(rng, 6),
            ms=_blob(rng, 16),
            alg=None if rng.random() < 0.4 else alg,
            hkdf=None if rng.random() < 0.6 else rng.choice(_HKDFS),
            salt=salt,
            context_id=None if rng.random() < 0.5 else _blob(rng),
        )
    )


def run(count: int, seed: int) -> Report:
    rng = random.Random(seed)
    report = Report()
    for _ in range(count):
        id_ = _maybe(rng, partial(_blob, rng))
        context = _maybe(rng, partial(rng.choice, (None, _blob(rng))))
        alg = rng.choice(_ALGS)
        kind = rng.choice(("Key", "IV", "Key", "IV", "other"))
        length = rng.choice((16, 13, 12, 32, 0, 1, 33, 255, 256, 70000, -1))
        report.check("kdf_info", (mine.kdf_info, ref.kdf_info), id_, context, alg, kind, length)
        salt = None if rng.random() < 0.3 else _blob(rng, 32)
        n1, n2 = _maybe(rng, partial(_blob, rng, 8)), _maybe(rng, partial(_blob, rng, 8))
        salts = (mine.build_master_salt, ref.build_master_salt)
        report.check("build_master_salt", salts, salt, n1, n2)
        other_id = id_ if rng.random() < 0.05 else _blob(rng)
        fields = {
            "master_secret": _maybe(rng, partial(_blob, rng, 16)),
            "master_salt": _maybe(rng, partial(_blob, rng, 20)),
            "id_context": context,
            "sender_id": id_,
            "recipient_id": _maybe(rng, partial(_given, other_id)),
            "alg": alg,
            "hkdf": rng.choice(_HKDFS),
        }
        contexts = (mine.DerivedContext, ref.DerivedContext)
        made = report.check("DerivedContext", contexts, view=_context_view, **fields)
        if made[0] == "ok":
            derive = (
                mine.derive_keys,
                lambda _ctx, f=fields: ref.derive_keys(ref.DerivedContext(**f)),
            )
            report.check("derive_keys", derive, made[1])
        material = _material(rng, alg, salt)
        if material[0] != "ok":
            continue
        ids = (_maybe(rng, partial(_blob, rng, 1)), _maybe(rng, partial(_blob, rng, 1)))
        role = rng.choice(("rs", "client", "rs", "client", "bad"))
        args = (material[1], n1, n2, *ids)
        params = (mine.context_parameters, ref.context_parameters)
        made = report.check("context_parameters", params, *args, view=_context_view, role=role)
        if made[0] == "ok":
            derive = (
                mine.derive_keys,
                lambda _ctx, a=args, r=role: ref.derive_keys(ref.context_parameters(*a, role=r)),
            )
            report.check("derive_keys(profile)", derive, made[1])
    return report


def test_random_derivation_inputs_match_the_reference() -> None:
    report = run(INPUTS, seed=9203)
    print(f"{INPUTS} inputs, {report.cases} comparisons, {report.accepted} accepted")
    assert not report.mismatches, "\n".join(report.mismatches[:5])
    # both the refusals and the derivations were reached
    assert report.accepted > INPUTS, report.accepted
    assert report.cases - report.accepted > INPUTS // 2, report.cases


def test_derive_keys_matches_rfc8613_appendix_c1() -> None:
    """RFC 8613 Appendix C.1.1 (client) byte for byte, through the hand-built HKDF."""
    ctx = mine.DerivedContext(
        master_secret=bytes.fromhex("0102030405060708090a0b0c0d0e0f10"),
        master_salt=bytes.fromhex("9e7ca92223786340"),
        id_context=None,
        sender_id=b"",
        recipient_id=b"\x01",
    )
    keys = mine.derive_keys(ctx)
    assert keys.sender_key == bytes.fromhex("f0910ed7295e6ad4b54fc793154302ff")
    assert keys.recipient_key == bytes.fromhex("ffb14e093c94c9cac9471648b4f98710")
    assert keys.common_iv == bytes.fromhex("4622d4dd6d944168eefb54987c")
