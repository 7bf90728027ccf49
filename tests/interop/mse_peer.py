#!/usr/bin/python3
"""A scripted MSE/PE (BitTorrent Message Stream Encryption) peer for tests.

Pure standard library (Debian /usr/bin/python3): pow() for the 768-bit
Diffie-Hellman exchange, hashlib for SHA-1, and a small RC4 that drops the
first 1024 keystream bytes, as the protocol says. Run it inside a private
network namespace (scripts/netns-run); it only ever opens the addresses it
is given.

Dialling side (attacks or checks a listener):

  mse_peer.py --connect IP:PORT --info-hash HEX --mode MODE [--bind IP]
              [--count N] [--timeout S] [--hold S] [--ya-first-byte B]

  plain          a plaintext BitTorrent handshake
  mse            an honest MSE handshake offering RC4 only
  mse-plain      an honest MSE handshake offering plaintext only
  key0, key1, key-p-minus-1, key-p, key-max
                 that public key (0, 1, P-1, P, 2^768-1), then wait
  long-pad       a valid public key, then 600 bytes without req1
  pad-c          honest keys, but len(PadC) = 1000 (the limit is 512)
  bad-vc         honest keys, a verification constant that is not zero
  cut            public key, then 10 bytes of H(req1, S), then half-close
  stall          public key, then 10 bytes of H(req1, S), then wait
  wrong-skey     honest keys, SKEY of a torrent the peer does not have
  random         64 KiB of random bytes

Listening side (attacks a dialler), one connection after another until
--timeout or SIGTERM:

  mse_peer.py --listen IP:PORT --mode MODE [--timeout S]

  no-vc          answer Ya with a valid Yb and 600 random bytes, never VC
  silent         accept and never answer
  bad-key        answer Ya with Yb = 0
  A plaintext handshake arriving at no-vc or bad-key is closed at once
  ("kind": "plain", "result": "refused").

Every connection prints one JSON line on stdout when it ends:
  {"mode", "kind" ("plain" | "mse" | "random" | "none"), "result", "secs",
   "received", ...}
  result  "handshake": the peer's BitTorrent handshake arrived (then
          "info_hash_ok" says whether it named --info-hash, and
          "encrypted" whether the stream after the handshake is RC4);
          "closed": the peer closed or reset the connection first;
          "timeout": still open after --timeout seconds;
          "refused": we closed it (listening side, plaintext dialler).
  secs      seconds from connect (or accept) to that outcome
  received  bytes received from the peer, on the wire
--count N runs N connections at once (dialling side).
--hold S keeps a finished handshake open S seconds, reading, before closing.
--ya-first-byte B picks an honest private key whose public key starts with
byte B (19 looks like the start of a plaintext handshake).

--self-test runs this script's initiator against its own responder over
socketpairs (RC4, plaintext selected, refusals, padding extremes) and checks
the reference vectors of xorrent's src/mse.rs unit test; exits 0 when all
pass. Exit status otherwise: 0 after the connections ran (whatever their
result), 2 on bad usage or when the address cannot be used.
"""

import argparse
import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time

P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563", 16)
G = 2
KEY_LEN = 96
MAX_PAD = 512
VC = bytes(8)
CRYPTO_PLAIN = 1
CRYPTO_RC4 = 2
PSTR = b"\x13BitTorrent protocol"


class Closed(Exception):
    """The peer closed or reset the connection."""


class Timeout(Exception):
    """The deadline passed with the connection open."""


class Refused(Exception):
    """The handshake broke the protocol (self-test responder)."""


def sha1(*parts):
    h = hashlib.sha1()
    for p in parts:
        h.update(p)
    return h.digest()


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def be(n, size=KEY_LEN):
    return n.to_bytes(size, "big")


class Rc4:
    """RC4 with the first 1024 keystream bytes thrown away (MSE's RC4-drop1024)."""

    def __init__(self, key):
        s = list(range(256))
        j = 0
        for i in range(256):
            j = (j + s[i] + key[i % len(key)]) & 0xFF
            s[i], s[j] = s[j], s[i]
        self.s, self.i, self.j = s, 0, 0
        self.crypt(bytes(1024))

    def crypt(self, data):
        s, i, j = self.s, self.i, self.j
        out = bytearray(len(data))
        for k, b in enumerate(data):
            i = (i + 1) & 0xFF
            j = (j + s[i]) & 0xFF
            s[i], s[j] = s[j], s[i]
            out[k] = b ^ s[(s[i] + s[j]) & 0xFF]
        self.i, self.j = i, j
        return bytes(out)


class Keys:
    """A Diffie-Hellman key pair; `private` is an int of at least 160 bits."""

    def __init__(self, private=None, first_byte=None):
        while True:
            x = private if private is not None else int.from_bytes(os.urandom(20), "big")
            self.private = x
            self.public = be(pow(G, x, P))
            if first_byte is None or private is not None or self.public[0] == first_byte:
                break

    def secret(self, theirs):
        return be(pow(int.from_bytes(theirs, "big"), self.private, P))


def bt_handshake(info_hash, peer_id=None):
    peer_id = peer_id or b"-MP0001-" + os.urandom(6).hex().encode()
    return PSTR + bytes(8) + info_hash + peer_id


class Stream:
    """A socket with a read buffer and a deadline; counts bytes received.
    Once `cipher` is set, what arrives is decrypted with it."""

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.received = 0
        self.cipher = None
        # The first bytes as they came: tells a plaintext dialler apart.
        self.head = b""

    def decrypt_with(self, cipher):
        """From here on (including what is buffered) the stream is RC4."""
        self.buf = cipher.crypt(self.buf)
        self.cipher = cipher

    def fill(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Timeout()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise Timeout()
        except OSError:
            raise Closed()
        if not data:
            raise Closed()
        self.received += len(data)
        self.head += data[:len(PSTR) - len(self.head)]
        self.buf += self.cipher.crypt(data) if self.cipher else data

    def take(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def sync(self, marker, window):
        """Drops bytes up to and including `marker`, which must start within
        `window` bytes; Refused when it does not."""
        while True:
            i = self.buf.find(marker, 0, window + len(marker))
            if i >= 0:
                self.buf = self.buf[i + len(marker):]
                return
            if len(self.buf) >= window + len(marker):
                raise Refused("no sync within %d bytes" % window)
            self.fill()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    def drain(self):
        """Reads until the peer closes (Closed) or the deadline (Timeout)."""
        while True:
            self.buf = b""
            self.fill()


# ---------------------------------------------------------------- initiator --

def initiate(st, skey, provide, ia, keys=None, pad_a=None, pad_c=0, vc=VC,
             declared_pad_c=None, on_yb=None):
    """Our side of an outgoing MSE handshake. Returns (select, read cipher,
    write cipher); the peer's bytes after PadD stay in st.buf, decrypted
    when RC4 was selected. `on_yb(secret)` may stop early (hostile modes)."""
    keys = keys or Keys()
    pad_a = os.urandom(pad_a if pad_a is not None else int.from_bytes(os.urandom(2), "big")
                       % (MAX_PAD + 1))
    st.send(keys.public + pad_a)
    secret = keys.secret(st.take(KEY_LEN))
    if on_yb is not None:
        on_yb(secret)
    write = Rc4(sha1(b"keyA", secret, skey))
    read = Rc4(sha1(b"keyB", secret, skey))
    pad_c_bytes = os.urandom(pad_c)
    plain = (vc + provide.to_bytes(4, "big")
             + (len(pad_c_bytes) if declared_pad_c is None else declared_pad_c).to_bytes(2, "big")
             + pad_c_bytes + len(ia).to_bytes(2, "big") + ia)
    st.send(sha1(b"req1", secret) + xor(sha1(b"req2", skey), sha1(b"req3", secret))
            + write.crypt(plain))
    # PadB lies between Yb and B's encrypted VC.
    marker = Rc4(sha1(b"keyB", secret, skey)).crypt(VC)
    st.sync(marker, MAX_PAD)
    read.crypt(VC)
    head = read.crypt(st.take(6))
    select = int.from_bytes(head[:4], "big")
    pad_d = int.from_bytes(head[4:], "big")
    if select not in (CRYPTO_PLAIN, CRYPTO_RC4) or not select & provide:
        raise Refused("select %d for provide %d" % (select, provide))
    if pad_d > MAX_PAD:
        raise Refused("PadD of %d bytes" % pad_d)
    read.crypt(st.take(pad_d))
    if select == CRYPTO_RC4:
        st.decrypt_with(read)
        return select, read, write
    return select, None, None


# ---------------------------------------------------------------- responder --

def respond(st, hashes, accept, keys=None, pad_b=None):
    """Our side of an incoming MSE handshake, for torrents `hashes`.
    Returns (info_hash, select, IA, read cipher, write cipher); bytes after
    the IA stay in st.buf, decrypted when RC4 was selected."""
    keys = keys or Keys()
    ya = int.from_bytes(st.take(KEY_LEN), "big")
    if ya <= 1 or ya >= P - 1:
        raise Refused("public key out of range")
    secret = keys.secret(be(ya))
    pad_b = os.urandom(pad_b if pad_b is not None else int.from_bytes(os.urandom(2), "big")
                       % (MAX_PAD + 1))
    st.send(keys.public + pad_b)
    st.sync(sha1(b"req1", secret), MAX_PAD)
    req2 = xor(st.take(20), sha1(b"req3", secret))
    skey = next((h for h in hashes if sha1(b"req2", h) == req2), None)
    if skey is None:
        raise Refused("unknown torrent")
    read = Rc4(sha1(b"keyA", secret, skey))
    write = Rc4(sha1(b"keyB", secret, skey))
    head = read.crypt(st.take(14))
    if head[:8] != VC:
        raise Refused("bad VC")
    provide = int.from_bytes(head[8:12], "big")
    pad_c = int.from_bytes(head[12:], "big")
    if pad_c > MAX_PAD:
        raise Refused("PadC of %d bytes" % pad_c)
    common = provide & accept
    select = CRYPTO_RC4 if common & CRYPTO_RC4 else CRYPTO_PLAIN if common & CRYPTO_PLAIN else 0
    if not select:
        raise Refused("no common method")
    read.crypt(st.take(pad_c))
    ia = read.crypt(st.take(int.from_bytes(read.crypt(st.take(2)), "big")))
    st.send(write.crypt(VC + select.to_bytes(4, "big") + bytes(2)))
    if select == CRYPTO_RC4:
        st.decrypt_with(read)
        return skey, select, ia, read, write
    return skey, select, ia, None, None


# ------------------------------------------------------------ dialling side --

BAD_KEYS = {
    "key0": 0,
    "key1": 1,
    "key-p-minus-1": P - 1,
    "key-p": P,
    "key-max": 2 ** 768 - 1,
}
CONNECT_MODES = ["plain", "mse", "mse-plain", "long-pad", "pad-c", "bad-vc", "cut", "stall",
                 "wrong-skey", "random"] + sorted(BAD_KEYS)
LISTEN_MODES = ["no-vc", "silent", "bad-key"]


def dial_once(a, skey, out):
    t0 = time.monotonic()
    rec = {"mode": a.mode, "kind": {"plain": "plain", "random": "random"}.get(a.mode, "mse")}
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if a.bind:
            sock.bind((a.bind, 0))
        sock.settimeout(a.timeout)
        sock.connect(a.connect)
    except OSError as e:
        rec.update(result="connect-failed", error=str(e), secs=time.monotonic() - t0, received=0)
        out(rec)
        return
    st = Stream(sock, t0 + a.timeout)
    mode = a.mode
    ours = bt_handshake(skey)
    try:
        if mode == "plain":
            st.send(ours)
        elif mode in ("mse", "mse-plain"):
            provide = CRYPTO_RC4 if mode == "mse" else CRYPTO_PLAIN
            keys = Keys(first_byte=a.ya_first_byte)
            rec["ya_first_byte"] = keys.public[0]
            select, _, _ = initiate(st, skey, provide, ours, keys=keys)
            rec["encrypted"] = select == CRYPTO_RC4
        elif mode in BAD_KEYS:
            st.send(be(BAD_KEYS[mode]))
            st.drain()
        elif mode == "long-pad":
            st.send(Keys().public + os.urandom(600))
            st.drain()
        elif mode == "pad-c":
            initiate(st, skey, CRYPTO_RC4, ours, pad_c=1000)
            st.drain()
        elif mode == "bad-vc":
            initiate(st, skey, CRYPTO_RC4, ours, vc=b"\x01" * 8)
            st.drain()
        elif mode in ("cut", "stall"):
            def partial(secret):
                st.send(sha1(b"req1", secret)[:10])
                if mode == "cut":
                    sock.shutdown(socket.SHUT_WR)
                st.drain()
            initiate(st, skey, CRYPTO_RC4, ours, pad_a=0, on_yb=partial)
        elif mode == "wrong-skey":
            initiate(st, sha1(b"not a torrent", os.urandom(8)), CRYPTO_RC4, ours)
            st.drain()
        elif mode == "random":
            st.send(os.urandom(64 * 1024))
            st.drain()
        theirs = st.take(68)
        rec["result"] = "handshake"
        rec["info_hash_ok"] = theirs[:20] == PSTR and theirs[28:48] == skey
        rec["secs"] = time.monotonic() - t0
        if a.hold > 0:
            st.deadline = time.monotonic() + a.hold
            try:
                st.drain()
            except (Closed, Timeout):
                pass
    except Closed:
        rec["result"] = "closed"
    except Timeout:
        rec["result"] = "timeout"
    except Refused as e:
        rec["result"] = "refused"
        rec["error"] = str(e)
    rec.setdefault("secs", time.monotonic() - t0)
    rec["received"] = st.received
    sock.close()
    out(rec)


# ----------------------------------------------------------- listening side --

def serve_one(a, sock, out):
    t0 = time.monotonic()
    st = Stream(sock, t0 + a.timeout)
    rec = {"mode": a.mode, "kind": "mse"}
    try:
        if a.mode == "silent":
            st.drain()
        while len(st.buf) < len(PSTR) and PSTR.startswith(st.buf):
            st.fill()
        if st.buf.startswith(PSTR):
            rec["kind"] = "plain"
            rec["result"] = "refused"
        else:
            st.take(KEY_LEN)
            if a.mode == "no-vc":
                st.send(Keys().public + os.urandom(600))
            else:
                st.send(bytes(KEY_LEN))
            st.drain()
    except Closed:
        rec["result"] = "closed"
    except Timeout:
        rec["result"] = "timeout"
    rec["secs"] = time.monotonic() - t0
    rec["received"] = st.received
    if not st.head:
        rec["kind"] = "none"
    elif st.head == PSTR:
        rec["kind"] = "plain"
    sock.close()
    out(rec)


def listen(a, out):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind(a.listen)
        srv.listen(64)
    except OSError as e:
        sys.stderr.write("mse_peer: cannot listen on %s:%d: %s\n" % (a.listen + (e,)))
        return 2
    sys.stdout.write("LISTENING\n")
    sys.stdout.flush()
    end = time.monotonic() + a.timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return 0
        srv.settimeout(left)
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            return 0
        threading.Thread(target=serve_one, args=(a, conn, out), daemon=True).start()


# ----------------------------------------------------------------- self-test --

def pair(timeout=10):
    x, y = socket.socketpair()
    d = time.monotonic() + timeout
    return Stream(x, d), Stream(y, d)


def run_pair(provide, accept, pads=(None, None, 0), hashes=None, skey=b"\xaa" * 20):
    """Initiator and responder over a socketpair; returns both outcomes
    (a result tuple or the exception) and the payloads each side read."""
    a, b = pair()
    ia = bt_handshake(skey)
    res = {}

    def resp():
        try:
            r = respond(b, hashes or [skey], accept, pad_b=pads[1])
            res["b"] = r
            w = r[4]
            b.send(w.crypt(b"pong") if w else b"pong")
            res["b_got"] = b.take(4)
        except (Refused, Closed, Timeout) as e:
            res["b"] = e
        b.sock.close()

    t = threading.Thread(target=resp)
    t.start()
    try:
        r = initiate(a, skey, provide, ia, pad_a=pads[0], pad_c=pads[2])
        res["a"] = r
        a.send(r[2].crypt(b"ping") if r[2] else b"ping")
        res["a_got"] = a.take(4)
    except (Refused, Closed, Timeout) as e:
        res["a"] = e
    a.sock.close()
    t.join()
    res["ia"] = ia
    return res


def self_test():
    failures = []

    def check(name, ok):
        sys.stdout.write("%s %s\n" % ("ok  " if ok else "FAIL", name))
        if not ok:
            failures.append(name)

    # The vectors of xorrent's src/mse.rs unit test: private keys 1..=20
    # and 21..=40 (bytes), SKEY 0xAA x 20, no padding, provide 3.
    ka = Keys(private=int.from_bytes(bytes(range(1, 21)), "big"))
    kb = Keys(private=int.from_bytes(bytes(range(21, 41)), "big"))
    skey = b"\xaa" * 20
    check("Ya matches the Rust vector",
          hashlib.sha1(ka.public).hexdigest() == "9fa4c50e31ec4635ddb9ef30405e9db341313ed2")
    check("Yb matches the Rust vector",
          hashlib.sha1(kb.public).hexdigest() == "e87d6f3297cfe8e032abf07a2ab1028c4e2dcbb0")
    s = ka.secret(kb.public)
    check("both sides derive one secret", s == kb.secret(ka.public))
    ia = PSTR + bytes(8) + skey + b"-XO0001-abcdefghijkl"
    wa = Rc4(sha1(b"keyA", s, skey))
    a2 = (sha1(b"req1", s) + xor(sha1(b"req2", skey), sha1(b"req3", s))
          + wa.crypt(VC + (3).to_bytes(4, "big") + bytes(2) + len(ia).to_bytes(2, "big") + ia))
    check("message 3 matches the Rust vector", a2.hex() == (
        "83c8d8a3d91a5bf40d723666c4258731c8427ccb4a278249411ccc527bb5e8d3a33af2a69725a1fc0327"
        "b6d211c82d4947ce46c0fdb5f33dc5f1cde92663bef8b2a3ceb2b540b15b12fd835db776f2939b6eac7b"
        "bae340a18931b75549e3c502254e06932535a0553ec3a3484057c3f52c0856c84b01be9bc909cb47"))
    wb = Rc4(sha1(b"keyB", s, skey))
    check("message 4 matches the Rust vector",
          wb.crypt(VC + (2).to_bytes(4, "big") + bytes(2)).hex() == "06d0d8359370f45e284e8cb732fd")
    check("RC4 payloads match the Rust vectors",
          wb.crypt(b"pong-from-B").hex() == "367644f7245a8b4cd7cbdf"
          and wa.crypt(b"ping-from-A").hex() == "cc27780c16ce89d84eacd0")

    for pads in [(None, None, 0), (0, 0, 0), (512, 512, 512), (1, 300, 17)]:
        r = run_pair(CRYPTO_RC4, CRYPTO_RC4 | CRYPTO_PLAIN, pads)
        ok = (isinstance(r["a"], tuple) and isinstance(r["b"], tuple)
              and r["a"][0] == CRYPTO_RC4 and r["b"][1] == CRYPTO_RC4
              and r["b"][0] == b"\xaa" * 20 and r["b"][2] == r["ia"]
              and r["a_got"] == b"pong" and r["b_got"] == b"ping")
        check("honest RC4 handshake, pads %s" % (pads,), ok)
    r = run_pair(CRYPTO_PLAIN, CRYPTO_RC4 | CRYPTO_PLAIN)
    check("plaintext is selected when only it is offered",
          isinstance(r["a"], tuple) and r["a"][0] == CRYPTO_PLAIN and r["a"][1] is None
          and r["b"][2] == r["ia"] and r["a_got"] == b"pong" and r["b_got"] == b"ping")
    r = run_pair(CRYPTO_RC4 | CRYPTO_PLAIN, CRYPTO_PLAIN)
    check("a plaintext-only responder selects plaintext",
          isinstance(r["a"], tuple) and r["a"][0] == CRYPTO_PLAIN and r["b_got"] == b"ping")
    r = run_pair(CRYPTO_PLAIN, CRYPTO_RC4)
    check("an RC4-only responder refuses a plaintext-only offer",
          isinstance(r["b"], Refused) and not isinstance(r["a"], tuple))
    r = run_pair(CRYPTO_RC4, CRYPTO_RC4, hashes=[b"\x01" * 20])
    check("an unknown SKEY is refused", isinstance(r["b"], Refused))
    r = run_pair(CRYPTO_RC4, CRYPTO_RC4, pads=(None, None, 513))
    check("a PadC over 512 bytes is refused", isinstance(r["b"], Refused))
    for name, key in sorted(BAD_KEYS.items()):
        a, b = pair(5)
        a.send(be(key))
        try:
            respond(b, [skey], CRYPTO_RC4)
            ok = False
        except Refused:
            ok = True
        check("responder refuses %s" % name, ok)
        a.sock.close()
        b.sock.close()
    k = Keys(first_byte=19)
    check("a key starting with byte 19 can be chosen", k.public[0] == 19)
    if failures:
        sys.stdout.write("self-test: %d failed\n" % len(failures))
        return 1
    sys.stdout.write("self-test: all passed\n")
    return 0


# --------------------------------------------------------------------- main --

def ip_port(s):
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected IP:PORT, got %r" % s)
    return host, int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--connect", type=ip_port, help="dial IP:PORT")
    g.add_argument("--listen", type=ip_port, help="accept on IP:PORT")
    g.add_argument("--self-test", action="store_true", help="check the script against itself")
    p.add_argument("--mode", choices=CONNECT_MODES + LISTEN_MODES)
    p.add_argument("--info-hash", help="the torrent's info-hash in hex")
    p.add_argument("--bind", help="local IP to dial from")
    p.add_argument("--count", type=int, default=1, help="connections at once (default 1)")
    p.add_argument("--timeout", type=float, default=20,
                   help="seconds a connection may stay open (listening: "
                        "how long to accept; default 20)")
    p.add_argument("--hold", type=float, default=0,
                   help="seconds to keep a finished handshake open (default 0)")
    p.add_argument("--ya-first-byte", type=int, help="first byte of our honest public key")
    a = p.parse_args()
    if a.self_test:
        return self_test()
    if a.connect and (a.mode not in CONNECT_MODES or not a.info_hash):
        p.error("--connect needs --info-hash and one of: %s" % ", ".join(CONNECT_MODES))
    if a.listen and a.mode not in LISTEN_MODES:
        p.error("--listen needs one of: %s" % ", ".join(LISTEN_MODES))

    lock = threading.Lock()

    def out(rec):
        rec["secs"] = round(rec["secs"], 3)
        with lock:
            sys.stdout.write(json.dumps(rec, sort_keys=True) + "\n")
            sys.stdout.flush()

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if a.listen:
        return listen(a, out)
    skey = bytes.fromhex(a.info_hash)
    if len(skey) != 20:
        p.error("--info-hash must be 40 hex digits")
    threads = [threading.Thread(target=dial_once, args=(a, skey, out)) for _ in range(a.count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
