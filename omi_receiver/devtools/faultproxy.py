"""A small HTTP proxy for fake-gcs-server that injects 429/503 and counts requests.

fake-gcs-server never fails; Cloud Storage does (429 on a hot object, 503 at times).
Point STORAGE_EMULATOR_HOST at this proxy to test the retry paths:

    python -m omi_receiver.devtools.faultproxy --upstream http://127.0.0.1:4443 --port 4444 --error-rate 0.1

A failure is injected either before the request reaches the emulator (nothing happened)
or after it (the write happened but the client sees an error): the second kind is what
makes retried writes dangerous, so both are exercised (`--mode mixed`, the default).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import http.server
import random
import threading
import urllib.parse

HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
}


def classify(method: str, path: str, query: str) -> str:
    """Request kind in Cloud Storage billing terms (uploads and composes are Class A)."""
    if path.startswith("/upload/") or (method == "PUT" and "upload_id" in query):
        return "upload"
    if path.endswith("/compose"):
        return "compose"
    if method == "DELETE":
        return "delete"
    if method == "PATCH":
        return "patch"
    if method == "GET" and ("alt=media" in query or path.startswith("/download/")):
        return "download"
    if method == "GET" and path.rstrip("/").endswith("/o"):
        return "list"
    if method == "GET":
        return "metadata"
    return f"other:{method}"


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        port: int = 0,
        error_rate: float = 0.0,
        mode: str = "mixed",
        seed: int | None = None,
        host: str = "127.0.0.1",
    ):
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.error_rate = error_rate
        self.mode = mode
        self.random = random.Random(seed)
        self.counts: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()
        self.bytes_down = 0
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer((host, port), self._handler())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset_counts(self) -> None:
        with self._lock:
            self.counts.clear()
            self.injected.clear()
            self.bytes_down = 0

    def _decide(self) -> str | None:
        """None, or 'before'/'after' with the status to inject."""
        with self._lock:
            if self.error_rate <= 0 or self.random.random() >= self.error_rate:
                return None
            if self.mode == "mixed":
                return self.random.choice(["before", "after"])
            return self.mode

    def _status(self) -> int:
        with self._lock:
            return self.random.choice([429, 503])

    def _handler(self):
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else ~40 ms per response (Nagle + delayed ACK)

            def log_message(self, *args):  # quiet
                pass

            def handle(self):
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError):
                    pass  # the client gave up on a slow or failed request; nothing to do

            def _any(self):
                parsed = urllib.parse.urlsplit(self.path)
                kind = classify(self.command, parsed.path, parsed.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.counts[kind] += 1
                fault = proxy._decide()
                if fault == "before":
                    return self._fail(kind, "before")
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                if fault == "after":
                    return self._fail(kind, "after")
                if kind == "download":
                    with proxy._lock:
                        proxy.bytes_down += len(data)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _fail(self, kind: str, when: str):
                status = proxy._status()
                with proxy._lock:
                    proxy.injected[f"{kind}:{when}:{status}"] += 1
                body = b'{"error": {"code": %d, "message": "injected by faultproxy"}}' % status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="fake-gcs-server URL, e.g. http://127.0.0.1:4443")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--error-rate", type=float, default=0.05, help="fraction of requests failed (0-1)")
    parser.add_argument("--mode", choices=["before", "after", "mixed"], default="mixed")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.upstream, args.port, args.error_rate, args.mode, args.seed)
    print(f"faultproxy on {proxy.url} -> {args.upstream}, error rate {args.error_rate}", flush=True)
    try:
        proxy.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
