#!/usr/bin/env python3
"""A web seed that misbehaves in one way, for tests of BEP-19 clients.

    bad_web_seed.py --bind IP --port N --root DIR --mode MODE

serves the files below DIR (URL path = file path) with Range support, and:

  corrupt   flips a byte in every response that starts at or past 64 KiB
  missing   answers 404 to everything
  loop      redirects every request to itself
  busy      answers 503 with Retry-After: 1 to the first request, then
            serves honestly
  norange   ignores Range and sends the whole file with 200
  honest    behaves

Prints READY once listening; logs one line per request on stderr
(`MODE METHOD PATH RANGE -> STATUS`). Runs until killed.
"""

import argparse
import http.server
import os
import socketserver
import sys
import threading
import urllib.parse


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    busy_left = 1
    lock = threading.Lock()

    def log_message(self, fmt, *args):
        pass

    def note(self, status, rng):
        sys.stderr.write("%s %s %s %s -> %d\n" % (self.server.mode, self.command, self.path, rng, status))
        sys.stderr.flush()

    def reply(self, status, headers, body=b""):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        mode = self.server.mode
        rng = self.headers.get("Range", "-")
        if mode == "missing":
            self.note(404, rng)
            return self.reply(404, [], b"not here")
        if mode == "loop":
            self.note(302, rng)
            return self.reply(302, [("Location", self.path)])
        if mode == "busy":
            with Handler.lock:
                left = Handler.busy_left
                Handler.busy_left = max(0, left - 1)
            if left > 0:
                self.note(503, rng)
                return self.reply(503, [("Retry-After", "1")], b"busy")
        rel = urllib.parse.unquote(urllib.parse.urlparse(self.path).path).lstrip("/")
        path = os.path.realpath(os.path.join(self.server.root, rel))
        if not path.startswith(self.server.root + os.sep) or not os.path.isfile(path):
            self.note(404, rng)
            return self.reply(404, [], b"no such file")
        with open(path, "rb") as f:
            data = f.read()
        size = len(data)
        first, last = 0, size - 1
        partial = False
        if rng.startswith("bytes=") and mode != "norange":
            a, _, b = rng[6:].partition("-")
            first = int(a)
            last = min(int(b), size - 1) if b else size - 1
            partial = True
        body = bytearray(data[first:last + 1])
        if mode == "corrupt" and first >= 65536 and body:
            body[len(body) // 2] ^= 0xFF
        if partial:
            self.note(206, rng)
            return self.reply(206, [("Content-Range", "bytes %d-%d/%d" % (first, last, size))], bytes(body))
        self.note(200, rng)
        return self.reply(200, [], bytes(body))


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--mode", required=True,
                   choices=["corrupt", "missing", "loop", "busy", "norange", "honest"])
    a = p.parse_args()
    s = Server((a.bind, a.port), Handler)
    s.mode = a.mode
    s.root = os.path.realpath(a.root)
    print("READY", flush=True)
    s.serve_forever()


if __name__ == "__main__":
    main()
