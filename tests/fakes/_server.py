"""An in-process HTTP server on a thread that records every request and injects failures.

Failures are queued with :meth:`FakeServer.fail` and consumed one per request:
``status`` (e.g. 500, or 429 with ``retry_after``), ``delay_s`` (slow response,
or a timeout when longer than the client's timeout), ``drop`` (close the
connection without answering). :meth:`down` stops listening so connections are
refused; :meth:`up` listens again on the same port.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Behaviour:
    status: int | None = None
    retry_after: str | None = None
    delay_s: float = 0.0
    drop: bool = False
    body: dict | None = None


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    form: dict[str, list[str]] = field(default_factory=dict)
    json: object = None
    status: int = 0
    at: float = 0.0  # time.perf_counter() when the request arrived


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeServer:
    """Base class: subclasses implement :meth:`handle` returning ``(status, headers, body_bytes)``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._behaviours: deque[Behaviour] = deque()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.first_request_event = threading.Event()
        self.up()

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        """Start (or restart) listening on the same port."""
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                outer._dispatch(self)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening: new connections are refused until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    close = down

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()

    # --- failure injection -----------------------------------------------------------

    def fail(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._behaviours.extend(behaviours)

    def fail_status(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self.fail(*[Behaviour(status=status, retry_after=retry_after) for _ in range(times)])

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._behaviours.clear()
            self.first_request_event.clear()

    # --- request handling -----------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        arrived = time.perf_counter()
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        rec = Recorded(h.command, parts.path, parse_qs(parts.query), {k: v for k, v in h.headers.items()}, body, at=arrived)
        ctype = h.headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" in ctype:
            rec.form = parse_qs(body.decode(), keep_blank_values=True)
        elif "json" in ctype and body:
            rec.json = json.loads(body)
        with self._lock:
            self.requests.append(rec)
            behaviour = self._behaviours.popleft() if self._behaviours else None
        self.first_request_event.set()
        if behaviour is not None and behaviour.delay_s and not behaviour.drop and behaviour.status is None:
            # A slow provider has already acted when its answer is late: the resource
            # exists from arrival on, as the sender's in-doubt lookup expects.
            status, headers, out = self.handle(rec)
            rec.status = status  # created, whether or not the client waits for the answer
            time.sleep(behaviour.delay_s)
            self._respond(h, rec, status, headers, out)
            return
        if behaviour is not None:
            if behaviour.delay_s:
                time.sleep(behaviour.delay_s)
            if behaviour.drop:
                rec.status = -1
                h.close_connection = True
                try:
                    h.connection.shutdown(2)
                except OSError:
                    pass
                return
            if behaviour.status is not None:
                headers = {"Content-Type": "application/json"}
                if behaviour.retry_after is not None:
                    headers["Retry-After"] = behaviour.retry_after
                payload = behaviour.body or {"code": 20500 if behaviour.status >= 500 else 20429,
                                             "message": f"injected {behaviour.status}", "status": behaviour.status}
                self._respond(h, rec, behaviour.status, headers, json.dumps(payload).encode())
                return
        status, headers, out = self.handle(rec)
        self._respond(h, rec, status, headers, out)

    def _respond(self, h, rec: Recorded, status: int, headers: dict[str, str], body: bytes) -> None:
        rec.status = status
        try:
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def handle(self, rec: Recorded) -> tuple[int, dict[str, str], bytes]:  # pragma: no cover - abstract
        raise NotImplementedError
