"""ASGI middleware around the app: the Host allow-list, the in-flight request limit, and the
headers every answer carries. Plain ASGI (no BaseHTTPMiddleware), so a client's disconnect
reaches the endpoint as it happens.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.serving.limits import MAX_REQUESTS_IN_FLIGHT

# The page loads nothing from anywhere else: a CDN or an injected script would be refused.
CONTENT_SECURITY_POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
_TRUSTED = "mnist_pipeline.trusted_host"  # set by TrustedHostMiddleware's inner app


def is_loopback(host: str) -> bool:
    """Whether --host keeps the server on this machine (a name or an address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names to answer: loopback names, the bound address, and --allowed-host."""
    for name in extra:
        if "*" in name[1:] or (name.startswith("*") and not name.startswith("*.")) or not name:
            raise PipelineError(
                f"--allowed-host {name!r:.80}: expected a host name, an address, or "
                "'*.domain' for every name in a domain"
            )
    hosts = [*LOOPBACK_HOSTS]
    if bind not in _WILDCARD_ADDRESSES:
        hosts.append(bind)
    return list(dict.fromkeys(_as_in_host_header(name) for name in [*hosts, *extra]))


def _as_in_host_header(name: str) -> str:
    """A Host header writes an IPv6 address in brackets: [::1]."""
    name = name.strip().lower().strip("[]")
    return f"[{name}]" if ":" in name else name


class Guard:
    """Host allow-list (400), then at most `max_in_flight` requests at once (503), and the
    security headers on every answer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: Sequence[str],
        max_in_flight: int = MAX_REQUESTS_IN_FLIGHT,
    ) -> None:
        self.app = app
        self.hosts = list(hosts)
        self.max_in_flight = max_in_flight
        self.in_flight = 0

        async def trusted(scope: Scope, receive: Receive, send: Send) -> None:
            scope[_TRUSTED] = True

        # Starlette's matching (ports, IPv6 brackets, "*.lab.example" wildcards), asked as
        # a yes/no question so that the refusal can be this API's one-line JSON.
        self._trusted_host = TrustedHostMiddleware(trusted, self.hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        if not await self._host_allowed(scope):
            host = Headers(scope=scope).get("host", "")
            detail = (
                f"Host header {host[:80]!r} is not one this server answers to; start it "
                "with --allowed-host NAME to accept a name clients use (a check against "
                "DNS rebinding)"
            )
            await _json(send_with_headers, 400, detail)
            return
        if self.in_flight >= self.max_in_flight:
            detail = f"server busy: {self.max_in_flight} requests in flight; try again shortly"
            await _json(send_with_headers, 503, detail, [(b"retry-after", b"1")])
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.in_flight -= 1

    async def _host_allowed(self, scope: Scope) -> bool:
        # The very address the client connected to is always fine: DNS rebinding needs a
        # name, and a page served from this IP is this server's own.
        server = scope.get("server")
        host = Headers(scope=scope).get("host", "")
        if server and host.rsplit(":", 1)[0].strip("[]") == str(server[0]) and host:
            return True
        probe = dict(scope)  # a copy: TrustedHostMiddleware marks it only when it trusts

        async def no_body() -> Message:
            return {"type": "http.disconnect"}

        async def discard(message: Message) -> None:
            pass

        await self._trusted_host(probe, no_body, discard)
        return bool(probe.get(_TRUSTED))


async def _json(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
