"""Serving the sandbox app: over real HTTP on loopback, or as an in-process httpx transport."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx

from connector.sandbox.app import DropConnection, Request, SandboxApp


def _handler_for(app: SandboxApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes; without this, Nagle's algorithm and
            # delayed ACKs add 40 ms to every request on loopback.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request.build(
                self.command, parts.path, parts.query, self.headers.items(), body
            )
            try:
                response = app.handle(request)
            except DropConnection:
                # The effect has happened; the client never hears about it.
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            return  # quiet: the sandbox counts requests itself

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # A client killed mid-request (crash tests do it on purpose) is not an error here.
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class SandboxServer:
    """The sandbox on a real loopback socket, in a background thread."""

    def __init__(self, app: SandboxApp, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.httpd = _Server((host, port), _handler_for(app))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextlib.contextmanager
def running(app: SandboxApp, host: str = "127.0.0.1", port: int = 0) -> Iterator[SandboxServer]:
    server = SandboxServer(app, host, port).start()
    try:
        yield server
    finally:
        server.stop()


def transport(app: SandboxApp) -> httpx.MockTransport:
    """The app as an httpx transport: no sockets, same behaviour (a drop becomes a lost answer)."""

    def handle(request: httpx.Request) -> httpx.Response:
        req = Request.build(
            request.method,
            request.url.path,
            request.url.query.decode(),
            request.headers.multi_items(),
            request.read(),
        )
        try:
            response = app.handle(req)
        except DropConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None
        return httpx.Response(
            response.status, headers=response.headers, content=response.body, request=request
        )

    return httpx.MockTransport(handle)
