"""Real receivers on loopback for `hive notify` tests: an HTTP server (apprise's json://,
form:// and ntfy:// all speak HTTP to it) and an SMTP server (aiosmtpd) for mailto://."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def data(self) -> dict[str, Any]:
        """The JSON or form fields apprise posted."""
        text = self.body.decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(text)
        return {k: v[0] for k, v in parse_qs(text).items()}


@dataclass
class HttpReceiver:
    """Records every request; paths containing /fail answer 500."""

    port: int = 0
    requests: list[Request] = field(default_factory=list)

    def at(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                receiver.requests.append(Request(self.command, self.path,
                                                 dict(self.headers), body))
            self.send_response(500 if "/fail" in self.path else 200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_POST

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    text: str


@dataclass
class SmtpReceiver:
    port: int = 0
    mails: list[Mail] = field(default_factory=list)


@contextmanager
def smtp_receiver() -> Iterator[SmtpReceiver]:
    from aiosmtpd.controller import Controller

    receiver = SmtpReceiver()

    class Handler:
        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            message = message_from_bytes(envelope.content, policy=email_policy)
            part = message.get_body(preferencelist=("plain",)) if message.is_multipart() \
                else message
            receiver.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos),
                                       str(message["Subject"]),
                                       part.get_content() if part is not None else ""))
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        receiver.port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()
