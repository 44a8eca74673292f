"""The codec against its reference copy (tests/helpers/codec_reference): same output, same errors.

The CBOR walk, the COSE framing, the CWT layers and the claims model were rewritten for
speed; every bound must hold as before. Inputs are random CBOR, mutations of valid
tokens, COSE messages assembled from broken parts but correctly protected, and claim
maps given to the claims model directly (tests/helpers/codec_diff.py). The default run
compares some 70,000 decoder calls; the long mode is
``python -m tests.helpers.soak codec`` (``make fuzz-codec``).
"""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import codec_diff
from tests.helpers.fuzz import CI_SETTINGS

#: Decoder inputs of the seeded run; each goes through several comparisons.
#: ``KEYBOUND_DIFF_CODEC=400000`` runs that many (one seed; the soak runs many).
SEEDED_INPUTS = int(os.environ.get("KEYBOUND_DIFF_CODEC", "20000"))


def test_seeded_random_and_mutated_inputs_match_the_reference() -> None:
    report = codec_diff.run(SEEDED_INPUTS, seed=17)
    print(f"{report.cases} comparisons, accepted: {report.accepted_by}")
    assert not report.mismatches, "\n".join(report.mismatches[:5])
    # the comparisons reached every decoder's success path, not only its refusals
    accepted = ("cbor.loads", "cwt.decode", "cose.decode", "to_cwt_payload", "cwt.encode")
    for what in (*accepted, "from_cwt_claims"):
        assert report.accepted_by.get(what, 0) > 20, (what, report.accepted_by)
    for what in ("cbor.loads", "cwt.decode", "cose.decode", "from_cwt_claims"):
        assert report.rejected_by.get(what, 0) > 20, (what, report.rejected_by)


MATERIAL = codec_diff.material(random.Random(5))


@settings(CI_SETTINGS, max_examples=1500)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_match_the_reference(data: bytes) -> None:
    report = codec_diff.Report()
    codec_diff.compare_cbor(report, data)
    codec_diff.compare_cwt(report, data, MATERIAL, MATERIAL.mac)
    assert not report.mismatches, report.mismatches[0]


@settings(CI_SETTINGS, max_examples=1500)
@given(st.integers(0, 2**64 - 1))
def test_mutated_tokens_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    data = codec_diff.mutate(rng, rng.choice(MATERIAL.tokens))
    report = codec_diff.Report()
    codec_diff.compare_cbor(report, data)
    codec_diff.compare_cwt(report, data, MATERIAL)
    assert not report.mismatches, report.mismatches[0]
