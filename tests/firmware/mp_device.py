# The firmware as deployed (app.boot + app.build_session), driven line by
# line from stdin so a test can act on the servers between two requests.
# Usage: micropython -X heapsize=64K mp_device.py BUNDLE
#
# Commands (one per line; every answer is one line):
#   get PATH            OSCORE GET through the ACE session
#                       -> "RESP c.dd payload-hex tokens=N posts=M"
#                          or "ERR Type message"
#   token               a new token request over the client-AS context
#                       -> "TOKEN n" or "ERR ..."
#   tokens N            N token requests in a row, "TOKEN n" after each
#   bench N PATH        N OSCORE GETs -> "BENCH oscore N total_us"
#   plain N HOST PORT PATH
#                       N plain CoAP GETs -> "BENCH plain N total_us"
#   heap                -> "HEAP peak=P now=N total=T"
#
# The peak is the live heap (gc.mem_alloc() right after gc.collect())
# sampled inside every exchange, just after a response arrived: then the
# request, its response, the token and both OSCORE contexts are all live,
# on top of the loaded code.

import binascii
import gc
import sys
import time

import app

import coap

# CoAP numbers (the firmware keeps its own as const(), private to coap.py)
CONTENT = 0x45

_peak = [0]


def sample():
    gc.collect()
    used = gc.mem_alloc()
    _peak[0] = max(_peak[0], used)
    return used


def probe(send):
    def f(msg):
        resp = send(msg)
        sample()
        return resp

    return f


def code(resp):
    return f"{resp.code >> 5}.{resp.code & 31:02d}"


def answer(session, words):
    cmd = words[0]
    if cmd == "get":
        resp = session.request(coap.request(coap.GET, words[1]))
        # hexlify, not .hex(): b"".hex() is b"" on MicroPython 1.22 to 1.25.
        body = binascii.hexlify(bytes(resp.payload)).decode() or "-"
        counts = f"tokens={session.tokens_requested} posts={session.authz_posts}"
        return f"RESP {code(resp)} {body} {counts}"
    if cmd == "token":
        session.request_token()
        return f"TOKEN {session.tokens_requested}"
    if cmd == "tokens":
        for _ in range(int(words[1]) - 1):
            session.request_token()
            print(f"TOKEN {session.tokens_requested}")
        session.request_token()
        return f"TOKEN {session.tokens_requested}"
    if cmd == "bench":
        n = int(words[1])
        session.request(coap.request(coap.GET, words[2]))  # token and context first
        t0 = time.ticks_us()
        for _ in range(n):
            resp = session.request(coap.request(coap.GET, words[2]))
            if resp.code != CONTENT:
                return f"ERR bench {code(resp)}"
        return f"BENCH oscore {n} {time.ticks_diff(time.ticks_us(), t0)}"
    if cmd == "plain":
        n = int(words[1])
        send = session.client.sender(words[2], int(words[3]))
        t0 = time.ticks_us()
        for _ in range(n):
            resp = send(coap.request(coap.GET, words[4]))
            if resp.code != CONTENT:
                return f"ERR plain {code(resp)}"
        return f"BENCH plain {n} {time.ticks_diff(time.ticks_us(), t0)}"
    if cmd == "heap":
        now = sample()
        return f"HEAP peak={_peak[0]} now={now} total={now + gc.mem_free()}"
    return f"ERR unknown command {cmd}"


def main():
    cfg = app.boot(sys.argv[1])
    client = coap.Client()
    session = app.build_session(cfg, client)
    del cfg
    session.client = client
    session.send_as = probe(session.send_as)
    session.send_rs = probe(session.send_rs)
    print(f"READY heap={sample()}")
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        try:
            out = answer(session, words)
        except Exception as e:  # report and keep serving commands
            out = f"ERR {type(e).__name__} {e}"
        print(out)


main()
