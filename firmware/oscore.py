# keybound firmware: client-side OSCORE (RFC 8613) for MicroPython.
#
# Pieces, bottom up:
#   hmac_sha256 / hkdf      HMAC (RFC 2104) and HKDF (RFC 5869) on hashlib
#   ccm_encrypt/ccm_decrypt AES-CCM-16-64-128 (COSE alg 10, RFC 9053 §4.2)
#                           built from AES-ECB: CBC-MAC + CTR (RFC 3610)
#   SequenceStore           sender sequence numbers persisted ahead in
#                           chunks (RFC 8613 Appendix B.1.1)
#   ReplayWindow            replay check of responses carrying a Partial IV
#   Context                 key derivation (§3.2), nonces (§5.2), AAD (§5.4),
#                           protect a request / unprotect its response (§8)
#   request()               one protected exchange, with the Echo (RFC 9175)
#                           retry a server asks for with 4.01 + Echo
#
# Only the client role is implemented: the device sends requests and
# verifies responses.

import hashlib

import cbor
from micropython import const

import coap

ALG_AES_CCM_16_64_128 = const(10)  # COSE algorithm value (RFC 9053 §4.2)
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

# Class U options stay in the outer message (RFC 8613 §4.1); every other
# option, including unknown ones, is class E and goes inside the ciphertext.
_CLASS_U = (coap.URI_HOST, coap.URI_PORT, coap.OSCORE, coap.PROXY_URI, coap.PROXY_SCHEME)


class OSCOREError(ValueError):
    """An OSCORE processing failure (bad option, decryption, replay, ...)."""


class UnprotectedResponse(OSCOREError):
    """The peer answered without an OSCORE option; .response holds it.

    A resource server that lost or never had the security context answers
    this way, typically 4.01 Unauthorized (RFC 8613 §8.4, RFC 9200 §5.3).
    """

    def __init__(self, response):
        super().__init__("unprotected response %d.%02d" % (response.code >> 5, response.code & 31))
        self.response = response


# ------------------------------------------------------------ HMAC, HKDF


def hmac_sha256(key, msg):
    """HMAC-SHA-256 (RFC 2104) built on hashlib.sha256."""
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def hkdf(salt, ikm, info, length):
    """HKDF-SHA-256 extract-and-expand (RFC 5869 §2).

    An empty salt is HashLen zero bytes (§2.2), which HMAC pads to the same
    key as the empty string.
    """
    if length > 255 * 32:
        raise OSCOREError("HKDF output too long")
    prk = hmac_sha256(salt, ikm)
    out = bytearray()
    t = b""
    i = 1
    while len(out) < length:
        t = hmac_sha256(prk, t + info + bytes((i,)))
        out.extend(t)
        i += 1
    return bytes(out[:length])


# ------------------------------------------------------------ AES-CCM


def _ctr_stream(aes, nonce, nbytes):
    # Key stream S_0 || S_1 || ... (RFC 3610 §2.3) in one ECB call: the
    # counter blocks A_i = flags(L-1) || nonce || i are built in place.
    nblocks = (nbytes + 15) // 16 + 1
    blocks = bytearray(16 * nblocks)
    for i in range(nblocks):
        o = 16 * i
        blocks[o] = 0x01  # L - 1
        blocks[o + 1 : o + 14] = nonce
        blocks[o + 14] = i >> 8
        blocks[o + 15] = i & 0xFF
    aes.encrypt(blocks, blocks)
    return blocks


def _cbc_mac(aes, nonce, aad, data):
    # CBC-MAC over B_0, the length-prefixed AAD and the plaintext, each
    # padded with zeros to a block boundary (RFC 3610 §2.2).
    flags = (0x40 if aad else 0) | (((_TAG_LEN - 2) // 2) << 3) | 0x01
    buf = bytearray()
    buf.append(flags)
    buf.extend(nonce)
    buf.extend(len(data).to_bytes(2, "big"))
    if aad:
        if len(aad) >= 0xFF00:
            raise OSCOREError("AAD too long")
        buf.extend(len(aad).to_bytes(2, "big"))
        buf.extend(aad)
        buf.extend(bytes(-len(buf) % 16))
    buf.extend(data)
    buf.extend(bytes(-len(buf) % 16))
    x = bytearray(16)
    mv = memoryview(buf)
    for o in range(0, len(buf), 16):
        blk = mv[o : o + 16]
        for j in range(16):
            x[j] ^= blk[j]
        aes.encrypt(x, x)
    return x


def _aes(key):
    # key is a 16-byte key or an AES-ECB object made by aes_ecb() (reusing
    # one saves an allocation per message).
    if not isinstance(key, (bytes, bytearray)):
        return key
    return aes_ecb(key)


def aes_ecb(key):
    """An AES-128 ECB encryptor (cryptolib.aes mode 1) for key."""
    import cryptolib

    if len(key) != _KEY_LEN:
        raise OSCOREError("AES-CCM-16-64-128 needs a 16-byte key")
    return cryptolib.aes(key, 1)  # mode 1: ECB


def ccm_encrypt(key, nonce, aad, plaintext):
    """AES-CCM-16-64-128 encryption: returns ciphertext || 8-byte tag.

    key is the 16-byte key or an aes_ecb(key) object.
    """
    if len(nonce) != _NONCE_LEN:
        raise OSCOREError("nonce must be 13 bytes")
    if len(plaintext) > _MAX_CCM_DATA:
        raise OSCOREError("message too long for AES-CCM with L=2")
    aes = _aes(key)
    tag = _cbc_mac(aes, nonce, aad, plaintext)
    ks = _ctr_stream(aes, nonce, len(plaintext))
    n = len(plaintext)
    out = bytearray(n + _TAG_LEN)
    for i in range(n):
        out[i] = plaintext[i] ^ ks[16 + i]
    for i in range(_TAG_LEN):
        out[n + i] = tag[i] ^ ks[i]
    return bytes(out)


def ccm_decrypt(key, nonce, aad, data):
    """AES-CCM-16-64-128 decryption of ciphertext || tag.

    Raises OSCOREError when the tag does not verify; the tag comparison
    accumulates XOR differences, so it takes the same time for every input.
    """
    if len(nonce) != _NONCE_LEN:
        raise OSCOREError("nonce must be 13 bytes")
    if len(data) < _TAG_LEN:
        raise OSCOREError("ciphertext shorter than the tag")
    n = len(data) - _TAG_LEN
    aes = _aes(key)
    ks = _ctr_stream(aes, nonce, n)
    pt = bytearray(n)
    for i in range(n):
        pt[i] = data[i] ^ ks[16 + i]
    tag = _cbc_mac(aes, nonce, aad, pt)
    diff = 0
    for i in range(_TAG_LEN):
        diff |= (tag[i] ^ ks[i]) ^ data[n + i]
    if diff:
        raise OSCOREError("decryption failed")
    return bytes(pt)


# ------------------------------------------------------------ sequence numbers


class SequenceStore:
    """Sender Sequence Numbers that survive reboots (RFC 8613 Appendix B.1.1).

    Before a number is used, the store makes sure a file says "next allowed
    number = N" with N above it, writing N = current + chunk ahead of time.
    After a reboot counting resumes at the persisted N, so a number that was
    possibly used before the reboot is never used again; at most chunk
    numbers are skipped.  The file also names the context (a truncated hash
    of sender key, Sender ID and ID Context); a context with new keys starts
    at 0.  With path=None the store only lives in RAM, which is safe only
    for contexts whose keys are never derived again.

    File format: one line "<fingerprint hex> <next allowed seqno>\n",
    replaced atomically by writing "<path>.tmp" and renaming it.
    """

    def __init__(self, path=None, chunk=_CHUNK):
        if chunk < 1:
            raise OSCOREError("chunk must be positive")
        self.path = path
        self.chunk = chunk
        self.limit = 0
        self.fingerprint = ""
        self.writes = 0

    def start(self, fingerprint):
        """First usable sequence number for the context with this fingerprint."""
        self.fingerprint = fingerprint
        first = 0
        if self.path is not None:
            try:
                with open(self.path) as f:
                    text = f.read()
            except OSError:
                text = None
            if text:
                parts = text.split()
                if len(parts) != 2:
                    # Refuse rather than guess: guessing low reuses nonces.
                    raise OSCOREError("corrupt sequence number file %s" % self.path)
                if parts[0] == fingerprint:
                    first = int(parts[1])
        self.limit = first
        return first

    def use(self, seq):
        """Called before seq is used; persists a new limit when needed."""
        if seq > _MAX_SEQ:
            raise OSCOREError("sender sequence numbers exhausted; rekey")
        if seq >= self.limit:
            self.limit = min(seq + self.chunk, _MAX_SEQ + 1)
            self._write()

    def _write(self):
        if self.path is None:
            return
        import os

        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%s %d\n" % (self.fingerprint, self.limit))
        os.rename(tmp, self.path)
        self.writes += 1


class ReplayWindow:
    """Sliding window over received Partial IVs (RFC 8613 §7.4)."""

    def __init__(self):
        self.top = -1  # highest sequence number accepted
        self.bits = 0  # bit i set: top - i was seen

    def check(self, seq):
        """Raise OSCOREError if seq was seen or is too old for the window."""
        if seq > self.top:
            return
        off = self.top - seq
        if off >= _WINDOW or (self.bits >> off) & 1:
            raise OSCOREError("replayed response (Partial IV %d)" % seq)

    def accept(self, seq):
        """Record seq; call only after the message verified."""
        if seq > self.top:
            shift = seq - self.top
            self.bits = ((self.bits << shift) | 1) & 0xFFFFFFFF if shift < _WINDOW else 1
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)


# ------------------------------------------------------------ helpers


def piv_bytes(seq):
    """Partial IV: the sequence number big-endian, shortest, 0 as 0x00 (§6.1)."""
    n = max(1, coap.byte_length(seq))
    return seq.to_bytes(n, "big")


def encode_option(piv=None, kid=None, kid_context=None):
    """OSCORE option value (RFC 8613 §6.1): flags, piv, s + kid context, kid.

    All-zero flags with nothing after them are sent as the empty value.
    """
    flags = 0
    out = bytearray(1)
    if piv is not None:
        if not 1 <= len(piv) <= _MAX_PIV_LEN:
            raise OSCOREError("bad Partial IV length")
        flags |= len(piv)
        out.extend(piv)
    if kid_context is not None:
        flags |= 0x10
        out.append(len(kid_context))
        out.extend(kid_context)
    if kid is not None:
        flags |= 0x08
        out.extend(kid)
    if flags == 0:
        return b""
    out[0] = flags
    return bytes(out)


def decode_option(value):
    """Parse an OSCORE option value -> (piv, kid_context, kid); absent = None."""
    if not value:
        return None, None, None
    flags = value[0]
    if flags & 0xE0:
        raise OSCOREError("reserved OSCORE flag bits set")
    n = flags & 0x07
    if n > _MAX_PIV_LEN:
        raise OSCOREError("reserved Partial IV length %d" % n)
    pos = 1
    piv = None
    if n:
        piv = bytes(value[pos : pos + n])
        if len(piv) != n:
            raise OSCOREError("truncated OSCORE option")
        pos += n
    kid_context = None
    if flags & 0x10:
        if pos >= len(value):
            raise OSCOREError("truncated OSCORE option")
        s = value[pos]
        kid_context = bytes(value[pos + 1 : pos + 1 + s])
        if len(kid_context) != s:
            raise OSCOREError("truncated OSCORE option")
        pos += 1 + s
    kid = None
    if flags & 0x08:
        kid = bytes(value[pos:])
    elif pos != len(value):
        raise OSCOREError("trailing bytes in OSCORE option")
    return piv, kid_context, kid


def aad(alg, request_kid, request_piv):
    """Enc_structure AAD (RFC 8613 §5.4, RFC 9052 §5.3).

    external_aad = [1, [alg_aead], request_kid, request_piv, options(h'')]
    wrapped as ["Encrypt0", h'', bstr(external_aad)].
    """
    external = cbor.dumps([1, [alg], request_kid, request_piv, b""])
    return cbor.dumps(["Encrypt0", b"", external])


def plaintext(msg, options):
    """The OSCORE plaintext (§5.3): code || inner options || 0xFF payload."""
    buf = bytearray()
    buf.append(msg.code)
    coap.encode_options(buf, options)
    if msg.payload:
        buf.append(0xFF)
        buf.extend(msg.payload)
    return bytes(buf)


def split_options(options):
    """(class E inner options, class U outer options) per RFC 8613 §4.1."""
    inner = []
    outer = []
    for o in options:
        if o[0] in _CLASS_U:
            if o[0] != coap.OSCORE:
                outer.append(o)
        else:
            inner.append(o)
    return inner, outer


def derive(master_secret, master_salt, ident, id_context, alg, kind, length):
    """One HKDF output of RFC 8613 §3.2.1.

    info = [id, id_context (or null), alg_aead, type ("Key" / "IV"), L].
    """
    info = cbor.dumps([ident, id_context, alg, kind, length])
    return hkdf(master_salt, master_secret, info, length)


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
        alg=ALG_AES_CCM_16_64_128,
        store=None,
    ):
        if alg != ALG_AES_CCM_16_64_128:
            raise OSCOREError("unsupported AEAD algorithm %r" % (alg,))
        if len(sender_id) > _MAX_ID_LEN or len(recipient_id) > _MAX_ID_LEN:
            raise OSCOREError("Sender/Recipient ID longer than %d bytes" % _MAX_ID_LEN)
        if sender_id == recipient_id:
            raise OSCOREError("Sender ID and Recipient ID must differ")
        self.alg = alg
        self.sender_id = bytes(sender_id)
        self.recipient_id = bytes(recipient_id)
        self.id_context = None if id_context is None else bytes(id_context)
        salt = master_salt or b""
        self.sender_key = derive(master_secret, salt, sender_id, id_context, alg, "Key", 16)
        self.recipient_key = derive(master_secret, salt, recipient_id, id_context, alg, "Key", 16)
        self.common_iv = derive(master_secret, salt, b"", id_context, alg, "IV", _NONCE_LEN)
        self._sender_aes = aes_ecb(self.sender_key)
        self._recipient_aes = aes_ecb(self.recipient_key)
        self.store = store if store is not None else SequenceStore()
        self.seq = self.store.start(self.fingerprint())
        self.replay = ReplayWindow()

    def fingerprint(self):
        # Names the key material in the sequence number file without
        # revealing it: 8 bytes of SHA-256 over key, Sender ID, ID Context.
        h = hashlib.sha256(self.sender_key)
        h.update(bytes((len(self.sender_id),)))
        h.update(self.sender_id)
        h.update(self.id_context or b"")
        return h.digest()[:8].hex()

    def nonce(self, id_piv, piv):
        """AEAD nonce (RFC 8613 §5.2): (len(ID) || ID || PIV, padded) ^ IV."""
        out = bytearray(_NONCE_LEN)
        out[0] = len(id_piv)
        start = _NONCE_LEN - 5 - len(id_piv)
        out[start : _NONCE_LEN - 5] = id_piv
        out[_NONCE_LEN - len(piv) :] = piv
        iv = self.common_iv
        for i in range(_NONCE_LEN):
            out[i] ^= iv[i]
        return bytes(out)

    def next_seq(self):
        """Take the next Sender Sequence Number (persisted ahead first)."""
        seq = self.seq
        self.store.use(seq)
        self.seq = seq + 1
        return seq

    def protect(self, req, send_kid_context=True):
        """Protect a request (RFC 8613 §8.1).

        Returns (outer message, request state); the state (kid, piv, nonce)
        is needed to verify the response.  The outer message is a POST
        carrying the class U options and the OSCORE option; mtype, message
        ID and token are copied from req.
        """
        seq = self.next_seq()
        piv = piv_bytes(seq)
        nonce = self.nonce(self.sender_id, piv)
        inner, outer = split_options(req.options)
        ct = ccm_encrypt(
            self._sender_aes,
            nonce,
            aad(self.alg, self.sender_id, piv),
            plaintext(req, inner),
        )
        kid_context = self.id_context if send_kid_context else None
        outer.append((coap.OSCORE, encode_option(piv, self.sender_id, kid_context)))
        msg = coap.Message(coap.POST, outer, ct, req.mtype, req.mid, req.token)
        return msg, (self.sender_id, piv, nonce)

    def unprotect(self, resp, state):
        """Verify and decrypt a response (RFC 8613 §8.4).

        Without a Partial IV the response uses the request's nonce; with one
        the nonce is built from the Recipient ID and that Partial IV, which
        must pass the replay window.  Returns the inner message (code, inner
        options, payload; type, ID and token copied from the outer one).
        Raises UnprotectedResponse when there is no OSCORE option.
        """
        value = resp.get(coap.OSCORE)
        if value is None:
            raise UnprotectedResponse(resp)
        piv, _kid_context, _kid = decode_option(value)
        request_kid, request_piv, request_nonce = state
        seq = None
        if piv is None:
            nonce = request_nonce
        else:
            seq = int.from_bytes(piv, "big")
            self.replay.check(seq)
            nonce = self.nonce(self.recipient_id, piv)
        if not resp.payload:
            raise OSCOREError("protected response without payload")
        pt = ccm_decrypt(
            self._recipient_aes, nonce, aad(self.alg, request_kid, request_piv), resp.payload
        )
        if seq is not None:
            self.replay.accept(seq)
        if not pt:
            raise OSCOREError("empty plaintext")
        try:
            options, payload = coap.decode_options(pt, 1)
        except coap.CoAPError as e:
            raise OSCOREError("bad inner message: %s" % e) from None
        for number, _ in options:
            if number == coap.OSCORE:
                raise OSCOREError("OSCORE option inside the plaintext")
        return coap.Message(pt[0], options, payload, resp.mtype, resp.mid, resp.token)


def request(ctx, send, req):
    """One OSCORE exchange through send(outer) -> outer response.

    If the server answers 4.01 with an Echo option (RFC 9175 §2.4, used by
    RFC 8613 Appendix B.1.2 servers that lost their replay window), the
    request is protected again, with a new sequence number and the Echo
    value as an inner option, and sent once more.  Returns the inner
    response; raises UnprotectedResponse for an unprotected answer.
    """
    for attempt in range(2):
        outer, state = ctx.protect(req)
        inner = ctx.unprotect(send(outer), state)
        if inner.code == coap.UNAUTHORIZED and attempt == 0:
            echo = inner.get(coap.ECHO)
            if echo is not None:
                if not 1 <= len(echo) <= _MAX_ECHO_LEN:
                    raise OSCOREError("bad Echo option length")
                opts = [o for o in req.options if o[0] != coap.ECHO]
                opts.append((coap.ECHO, echo))
                req = coap.Message(req.code, opts, req.payload)
                continue
        return inner
    return inner
