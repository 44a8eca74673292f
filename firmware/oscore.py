# keybound firmware: client-side OSCORE (RFC 8613) for MicroPython.
#
# Pieces, bottom up:
#   _hmac / _hkdf           HMAC (RFC 2104) and HKDF (RFC 5869) on hashlib
#   ccm                     AES-CCM-16-64-128 (COSE alg 10, RFC 9053 §4.2)
#                           built from AES-ECB: CBC-MAC + CTR (RFC 3610)
#   SequenceStore           sender sequence numbers persisted ahead in
#                           chunks (RFC 8613 Appendix B.1.1)
#   Context                 key derivation (§3.2), nonces (§5.2), AAD (§5.4),
#                           protect a request / unprotect its response (§8),
#                           replay window for responses with a Partial IV
#   request()               one protected exchange, with the Echo (RFC 9175)
#                           retry a server asks for with 4.01 + Echo
#
# Only the client role is implemented: the device sends requests and
# verifies responses.  The code is kept to few functions: every function
# and class costs heap on the board once the module is loaded.

import hashlib

import cbor
from micropython import const

import coap

_ALG = const(10)  # AES-CCM-16-64-128, the COSE algorithm value (RFC 9053 §4.2)
_KEY_LEN = const(16)
_TAG_LEN = const(8)  # M in RFC 3610
_NONCE_LEN = const(13)  # 15 - L with L = 2
_MAX_ID_LEN = const(7)  # nonce length - 6 (RFC 8613 §5.2)
_MAX_PIV_LEN = const(5)
_MAX_SEQ = const(0xFFFFFFFFFF)  # 2**40 - 1 (RFC 8613 §7.2.1)
_MAX_CCM_DATA = const(0xFFFF)  # L = 2 limits a message to 65535 bytes
_CHUNK = const(32)  # K of Appendix B.1.1: seqnos reserved per write
_WINDOW = const(32)  # replay window width for responses with a Partial IV
_MAX_ECHO_LEN = const(40)  # RFC 9175 §2.2.1
# Option numbers, as in coap.py (consts do not cross modules).
_OSCORE = const(9)
_ECHO = const(252)
_UNAUTHORIZED = const(0x81)

# Error messages: one string constant, cut when an error is raised (cbor.py,
# "Error messages").
_MSG = const(
    "bad length|decryption failed|bad chunk|corrupt sequence number files %s|"
    "seq exhausted: rekey|bad option|bad alg|long ID|same IDs|"
    "replayed response (Partial IV %d)|no payload|bad inner|bad Echo"
)
_BAD_LENGTH = const(0)
_DECRYPTION_FAILED = const(1)
_BAD_CHUNK = const(2)
_CORRUPT_SEQUENCE_NUMBER = const(3)
_SEQ_EXHAUSTED_REKEY = const(4)
_BAD_OPTION = const(5)
_BAD_ALG = const(6)
_LONG_ID = const(7)
_SAME_IDS = const(8)
_REPLAYED_RESPONSE_PARTIAL = const(9)
_NO_PAYLOAD = const(10)
_BAD_INNER = const(11)
_BAD_ECHO = const(12)


class OSCOREError(ValueError):
    """An OSCORE processing failure (bad option, decryption, replay, ...)."""


def _error(i, args=None):
    m = _MSG.split("|")[i]
    return OSCOREError(m if args is None else m % args)


class UnprotectedResponse(OSCOREError):
    """The peer answered without an OSCORE option; .response holds it.

    A resource server that lost or never had the security context answers
    this way, typically 4.01 Unauthorized (RFC 8613 §8.4, RFC 9200 §5.3).
    Made by Context.unprotect (no __init__ of its own: a method costs heap).
    """


# ------------------------------------------------------------ HMAC, HKDF


def _hmac(key, msg):
    # HMAC-SHA-256 (RFC 2104) on hashlib.sha256.
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    h = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    h.update(msg)
    o = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    o.update(h.digest())
    return o.digest()


# ------------------------------------------------------------ AES-CCM


# Three 16-byte blocks for ccm(), allocated once when the module loads: the
# CBC-MAC state X_i, a counter block A_i and its key stream block S_i
# (RFC 3610 §2.2-2.3).  ccm() works one block at a time in them, so a
# message costs its output and the AES key schedule, nothing more.
_X = bytearray(16)
_A = bytearray(16)
_S = bytearray(16)


def ccm(key, nonce, aad, data, decrypt=False):
    """AES-CCM-16-64-128 (RFC 3610 with M = 8, L = 2).

    Encrypting returns ciphertext || 8-byte tag; decrypting (decrypt=True)
    takes ciphertext || tag and returns the plaintext, or raises OSCOREError
    "decryption failed" when the tag does not verify (compared by
    accumulating XOR differences, in the same time for every input).  key
    is the 16-byte key; both results are bytearrays.
    """
    n = len(data) - (_TAG_LEN if decrypt else 0)
    # The ciphertext holds the tag; L = 2 bounds the message, the AAD's
    # length prefix is 2 bytes.
    if not 0 <= n <= _MAX_CCM_DATA or len(aad) >= 0xFF00:
        raise _error(_BAD_LENGTH)
    if len(nonce) != _NONCE_LEN or len(key) != _KEY_LEN:
        raise _error(_BAD_LENGTH)
    import cryptolib

    aes = cryptolib.aes(key, 1)  # mode 1: ECB
    out = bytearray(n if decrypt else n + _TAG_LEN)
    # CTR (RFC 3610 §2.3): block i of the data is XORed with
    # S_i = E(A_i), A_i = flags(L - 1) || nonce || i; S_0 masks the tag.
    a = _A
    s = _S
    a[0] = 1  # L - 1
    a[1:14] = nonce
    for i in range(0, n, 16):
        c = i // 16 + 1
        a[14] = c >> 8
        a[15] = c & 0xFF
        aes.encrypt(a, s)
        for j in range(min(16, n - i)):
            out[i + j] = data[i + j] ^ s[j]
    # CBC-MAC over B_0, the length-prefixed AAD and the plaintext, each
    # padded with zeros to a block boundary (RFC 3610 §2.2).
    x = _X
    x[0] = (0x40 if aad else 0) | ((_TAG_LEN - 2) // 2) << 3 | 1
    x[1:14] = nonce
    x[14] = n >> 8
    x[15] = n & 0xFF
    aes.encrypt(x, x)
    if aad:
        x[0] ^= len(aad) >> 8
        x[1] ^= len(aad) & 0xFF
    # XOR the AAD into X after its length, then the plaintext from offset
    # 0, encrypting every full block, then the last one padded with zeros
    # (in the loop, not a function of its own: each costs heap).
    j = 2
    for d in (aad, memoryview(out if decrypt else data)[:n]):
        if d:
            for b in d:
                x[j] ^= b
                j += 1
                if j == 16:
                    aes.encrypt(x, x)
                    j = 0
            if j:
                aes.encrypt(x, x)
        j = 0
    a[14] = a[15] = 0
    aes.encrypt(a, s)
    diff = 0
    for i in range(_TAG_LEN):
        t = x[i] ^ s[i]
        if decrypt:
            diff |= t ^ data[n + i]
        else:
            out[n + i] = t
    if diff:
        raise _error(_DECRYPTION_FAILED)
    return out


# ------------------------------------------------------------ sequence numbers


class SequenceStore:
    """Sender Sequence Numbers that survive reboots (RFC 8613 Appendix B.1.1).

    Before a number is used, the store makes sure flash says "next allowed
    number = N" with N above it, writing N = current + chunk ahead of time.
    After a reboot counting resumes at the persisted N, so a number that was
    possibly used before the reboot is never used again; at most chunk
    numbers are skipped.  Each record also names the context (a truncated
    hash of sender key, Sender ID and ID Context); a context with new keys
    starts at 0.  With path=None the store only lives in RAM, which is safe
    only for contexts whose keys are never derived again.

    Power cuts: a record is never overwritten in place of the newest one.
    Two slots, the files <path> and <path>.1, take turns; each record is
    "<counter> <fingerprint> <limit> <check>\n", check being 8 hex digits of
    SHA-256 over the rest, and the valid record with the higher counter
    wins.  A write cut short leaves the older record intact, on FAT (where
    a rename over a file is a remove and a rename) as on littlefs.  A file
    of the earlier one-line format "<fingerprint> <limit>" (at <path> or a
    left-over <path>.tmp) is read as counter 0.  Two slots that both exist
    and are both damaged stop the store: guessing low reuses nonces.
    """

    def __init__(self, path=None, chunk=_CHUNK):
        if chunk < 1:
            raise _error(_BAD_CHUNK)
        self.path = path
        self.chunk = chunk
        self.limit = 0
        self.fingerprint = ""
        self.writes = 0
        self.counter = -1  # of the newest valid record; -1: none
        self.fresh = True  # no record was found at start()

    def start(self, fingerprint):
        """First usable sequence number for the context with this fingerprint."""
        self.fingerprint = fingerprint
        self.limit = 0
        self.counter = -1
        self.fresh = True
        if not self.path:
            return 0
        best = None
        damaged = 0
        for i, name in enumerate((self.path, self.path + ".1", self.path + ".tmp")):
            try:
                with open(name) as f:
                    # The longest record is 54 characters (a 13-digit counter
                    # and limit); a longer file cannot be whole.  64, not
                    # more: the read's block is the renewal's largest.
                    parts = f.read(64).split()
            except OSError:
                continue  # absent
            rec = None
            if len(parts) == 4 and _check(" ".join(parts[:3])) == parts[3]:
                rec = parts[:3]
            elif len(parts) == 2 and i != 1:
                rec = ["0"] + parts  # the earlier one-line format
            try:
                rec = (int(rec[0]), rec[1], int(rec[2]))
            except (TypeError, ValueError):
                damaged += i < 2  # a torn or damaged slot
                continue
            if best is None or rec[0] > best[0] or (rec[0] == best[0] and rec[2] > best[2]):
                best = rec
        if damaged > 1:  # a power cut damages one slot at most
            raise _error(_CORRUPT_SEQUENCE_NUMBER, self.path)
        if best is None:
            return 0  # nothing written yet, or the first write was cut short
        self.fresh = False
        self.counter = best[0]
        if best[1] == fingerprint:
            self.limit = best[2]
        return self.limit

    def use(self, seq):
        """Called before seq is used; persists a new limit when needed."""
        if seq > _MAX_SEQ:
            raise _error(_SEQ_EXHAUSTED_REKEY)
        if seq >= self.limit:
            limit = min(seq + self.chunk, _MAX_SEQ + 1)
            if self.path:
                n = self.counter + 1
                rec = "%d %s %d" % (n, self.fingerprint, limit)
                # "%s%s" makes a new string for either slot (path + "" would not): the
                # heap a write takes does not change with the slot, run after run.
                with open("%s%s" % (self.path, ".1" if n & 1 else ""), "w") as f:
                    f.write("%s %s\n" % (rec, _check(rec)))
                self.counter = n
                self.writes += 1
            # Only a limit that reached flash may be handed out.
            self.limit = limit


def _check(text):
    # 8 hex digits of SHA-256: tells a whole record from a torn one.
    return "%08x" % int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


# ------------------------------------------------------------ helpers


def piv_bytes(seq):
    """Partial IV: the sequence number big-endian, shortest, 0 as 0x00 (§6.1)."""
    return coap.uint(seq) or b"\x00"


def decode_option(value):
    """Parse an OSCORE option value -> (piv, kid_context, kid); absent = None."""
    if not value:
        return None, None, None
    flags = value[0]
    n = flags & 7
    if flags & 0xE0 or n > _MAX_PIV_LEN:
        raise _error(_BAD_OPTION)
    pos = 1 + n
    piv = bytes(value[1:pos]) if n else None
    kid_context = None
    if flags & 0x10:
        if pos >= len(value):
            raise _error(_BAD_OPTION)
        s = value[pos]
        kid_context = bytes(value[pos + 1 : pos + 1 + s])
        pos += 1 + s
    if pos > len(value):
        raise _error(_BAD_OPTION)
    kid = None
    if flags & 8:
        kid = bytes(value[pos:])
    elif pos != len(value):
        raise _error(_BAD_OPTION)
    return piv, kid_context, kid


def aad(alg, request_kid, request_piv):
    """Enc_structure AAD (RFC 8613 §5.4, RFC 9052 §5.3).

    external_aad = [1, [alg_aead], request_kid, request_piv, options(h'')]
    wrapped as ["Encrypt0", h'', bstr(external_aad)].
    """
    return cbor.dumps(["Encrypt0", b"", cbor.dumps([1, [alg], request_kid, request_piv, b""])])


def plaintext(msg, options):
    """The OSCORE plaintext (§5.3): code || inner options || 0xFF payload."""
    buf = bytearray((msg.code,))
    coap.encode_options(buf, options)
    if msg.payload:
        buf.append(0xFF)
        buf.extend(msg.payload)
    return buf


# ------------------------------------------------------------ the context


class Context:
    """A client's OSCORE Security Context (RFC 8613 §3).

    Derives Sender Key, Recipient Key and Common IV from the Master Secret,
    Master Salt, Sender ID, Recipient ID and optional ID Context (§3.2) for
    AES-CCM-16-64-128 and HKDF-SHA-256.  store is a SequenceStore; pass one
    with a path for any context whose keys can come back after a reboot.
    """

    def __init__(
        self,
        master_secret,
        master_salt=b"",
        sender_id=b"",
        recipient_id=b"",
        id_context=None,
        alg=_ALG,
        store=None,
    ):
        if alg != _ALG:
            raise _error(_BAD_ALG)
        if len(sender_id) > _MAX_ID_LEN or len(recipient_id) > _MAX_ID_LEN:
            raise _error(_LONG_ID)
        if sender_id == recipient_id:
            raise _error(_SAME_IDS)
        self.alg = alg
        self.sender_id = sender_id = bytes(sender_id)
        self.recipient_id = bytes(recipient_id)
        self.id_context = id_context = None if id_context is None else bytes(id_context)
        # HKDF-SHA-256 (RFC 5869) with outputs of at most one hash block:
        # PRK = HMAC(salt, secret); OKM = HMAC(PRK, info || 0x01)[:L], with
        # info = [id, id_context (or null), alg_aead, type, L] (§3.2.1).
        # An empty salt is HashLen zero bytes, which HMAC pads to the same key.
        prk = _hmac(master_salt or b"", master_secret)
        keys = []
        for ident, kind, n in (
            (sender_id, "Key", _KEY_LEN),
            (recipient_id, "Key", _KEY_LEN),
            (b"", "IV", _NONCE_LEN),
        ):
            keys.append(_hmac(prk, cbor.dumps([ident, id_context, alg, kind, n]) + b"\x01")[:n])
        # The AES-ECB objects (416 bytes each on a 64-bit port) are made per
        # message from these keys rather than kept for the context's life.
        self.sender_key, self.recipient_key, self.common_iv = keys
        self.store = store = store or SequenceStore()
        # The fingerprint names the key material in the sequence number file
        # without revealing it: 8 bytes of SHA-256 over key, Sender ID, ID
        # Context.
        h = hashlib.sha256(keys[0])
        h.update(bytes((len(sender_id),)) + sender_id + (id_context or b""))
        self.seq = store.start(h.digest()[:8].hex())
        self.top = -1  # replay window: highest Partial IV accepted,
        self.bits = 0  # and bit i set when top - i was seen (§7.4)

    def nonce(self, id_piv, piv):
        """AEAD nonce (RFC 8613 §5.2): (len(ID) || ID || PIV, padded) ^ IV."""
        out = bytearray(_NONCE_LEN)
        out[0] = len(id_piv)
        out[_NONCE_LEN - 5 - len(id_piv) : _NONCE_LEN - 5] = id_piv
        out[_NONCE_LEN - len(piv) :] = piv
        for i in range(_NONCE_LEN):
            out[i] ^= self.common_iv[i]
        return out

    def protect(self, req, send_kid_context=True):
        """Protect a request (RFC 8613 §8.1).

        Returns (outer message, request state); the state (kid, piv, nonce)
        is needed to verify the response.  The outer message is a POST
        carrying the class U options and the OSCORE option; mtype, message
        ID and token are copied from req.  Class U options stay outside
        (§4.1); every other option, unknown ones included, is class E and
        goes inside the ciphertext.
        """
        seq = self.seq
        self.store.use(seq)  # persisted ahead before it is used
        self.seq = seq + 1
        piv = piv_bytes(seq)
        sid = self.sender_id
        nonce = self.nonce(sid, piv)
        inner = []
        outer = []
        for o in req.options:
            # Uri-Host, Uri-Port, Proxy-Uri, Proxy-Scheme (OSCORE: dropped)
            if o[0] in (3, 7, 35, 39):
                outer.append(o)
            elif o[0] != _OSCORE:
                inner.append(o)
        ct = ccm(self.sender_key, nonce, aad(self.alg, sid, piv), plaintext(req, inner))
        # OSCORE option (§6.1): flags (n, k, h), Partial IV, s + kid context, kid.
        kidc = self.id_context if send_kid_context else None
        opt = bytearray((len(piv) | 8 | (0 if kidc is None else 0x10),))
        opt.extend(piv)
        if kidc is not None:
            opt.append(len(kidc))
            opt.extend(kidc)
        opt.extend(sid)
        outer.append((_OSCORE, bytes(opt)))
        msg = coap.Message(coap.POST, outer, ct, req.mtype, req.mid, req.token)
        return msg, (sid, piv, nonce)

    def unprotect(self, resp, state):
        """Verify and decrypt a response (RFC 8613 §8.4).

        Without a Partial IV the response uses the request's nonce; with one
        the nonce is built from the Recipient ID and that Partial IV, which
        must pass the replay window.  Returns the inner message (code, inner
        options, payload; type, ID and token copied from the outer one).
        Raises UnprotectedResponse when there is no OSCORE option.
        """
        value = resp.get(_OSCORE)
        if value is None:
            e = UnprotectedResponse("unprotected %d.%02d" % (resp.code >> 5, resp.code & 31))
            e.response = resp
            raise e
        piv = decode_option(value)[0]
        nonce = state[2]
        if piv is not None:
            seq = int.from_bytes(piv, "big")
            off = self.top - seq
            if off >= 0 and (off >= _WINDOW or (self.bits >> off) & 1):
                raise _error(_REPLAYED_RESPONSE_PARTIAL, seq)
            nonce = self.nonce(self.recipient_id, piv)
        if not resp.payload:
            raise _error(_NO_PAYLOAD)
        pt = ccm(self.recipient_key, nonce, aad(self.alg, state[0], state[1]), resp.payload, 1)
        if piv is not None:
            # Only a verified Partial IV enters the window.
            if off < 0:
                self.bits = ((self.bits << -off) | 1) & 0xFFFFFFFF if -off < _WINDOW else 1
                self.top = seq
            else:
                self.bits |= 1 << off
        if not pt:
            raise _error(_BAD_INNER)
        try:
            options, payload = coap.decode_options(pt, 1, True)
        except coap.CoAPError:
            raise _error(_BAD_INNER) from None
        for o in options:
            if o[0] == _OSCORE:
                raise _error(_BAD_INNER)
        code = pt[0]
        # The payload is the tail of the plaintext: moved to its front in
        # place rather than copied (a bytearray, as block.rest() returns).
        pt[: len(pt) - len(payload)] = b""
        return coap.Message(code, options, pt, resp.mtype, resp.mid, resp.token)


def request(ctx, send, req):
    """One OSCORE exchange through send(outer) -> outer response.

    If the server answers 4.01 with an Echo option (RFC 9175 §2.4, used by
    RFC 8613 Appendix B.1.2 servers that lost their replay window), the
    request is protected again, with a new sequence number and the Echo
    value as an inner option, and sent once more.  Returns the inner
    response; raises UnprotectedResponse for an unprotected answer.
    """
    outer, state = ctx.protect(req)
    inner = ctx.unprotect(send(outer), state)
    echo = inner.get(_ECHO)
    if inner.code == _UNAUTHORIZED and echo is not None:
        if not 1 <= len(echo) <= _MAX_ECHO_LEN:
            raise _error(_BAD_ECHO)
        opts = [o for o in req.options if o[0] != _ECHO]
        opts.append((_ECHO, echo))
        outer, state = ctx.protect(coap.Message(req.code, opts, req.payload))
        inner = ctx.unprotect(send(outer), state)
    return inner
