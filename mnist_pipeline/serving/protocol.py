"""uvicorn's h11 protocol with the time limits it lacks, and a cap on open connections.

uvicorn times out only an idle keep-alive connection, and only after a first answer (each
byte received resets it): a client that sends its headers or body a byte at a time, or
announces more body than it sends, holds the connection forever (the request timeouts
proposed in uvicorn issue #157 were never added). An ASGI-level timeout on `receive`
cannot see the headers, nor a body the app never reads, so the limits live here, where
the bytes arrive: one timer per connection, following h11's view of the client's side
(serving/limits.py has the values):

- waiting for a request line and headers (h11 IDLE): HEADER_TIMEOUT_S from the
  connection or the previous answer; then a 408 if part of a request came, else a close;
- receiving a body (SEND_BODY) before the answer: BODY_TIMEOUT_S, plus 1 s per
  MIN_BODY_BYTES_PER_S received; then a 408 and a close, and the app sees a disconnect;
- receiving a body after the answer (an early 413): LINGER_S of discarding, then a close.

While the app works on a complete request (DONE) no timer runs: decoding and inference
have their own bounds.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mnist_pipeline.serving.limits import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    LINGER_S,
    MAX_CONNECTIONS,
    MIN_BODY_BYTES_PER_S,
)


class GuardedH11Protocol(H11Protocol):
    """H11Protocol plus header, body and linger deadlines (see the module's docstring)."""

    _timer: asyncio.TimerHandle | None = None
    _phase: str | None = None  # "head", "body", "linger" or None (the app is working)
    _deadline = 0.0
    _body_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > MAX_CONNECTIONS:
            self.transport.close()  # before a byte is read: costs the client a reconnect
            return
        self._follow()

    def data_received(self, data: bytes) -> None:
        if self._phase == "body":
            self._body_bytes += len(data)
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_timer(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Move to the phase h11 says the client is in; start its deadline on entry."""
        if self.transport.is_closing():
            self._set_timer(None)
            return
        now = self.loop.time()
        theirs, ours = self.conn.their_state, self.conn.our_state
        if theirs is h11.IDLE:
            phase = "head"
        elif theirs is h11.SEND_BODY:
            phase = "linger" if ours in (h11.DONE, h11.MUST_CLOSE) else "body"
        else:
            phase = None
        if phase == self._phase:
            return
        self._phase = phase
        if phase == "head":
            self._set_timer(now + HEADER_TIMEOUT_S)
        elif phase == "body":
            self._body_bytes = 0
            self._set_timer(now + BODY_TIMEOUT_S)
        elif phase == "linger":
            self._set_timer(now + LINGER_S)
        else:
            self._set_timer(None)

    def _set_timer(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._deadline = deadline
            self._timer = self.loop.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._phase == "body":
            # The deadline grows with what arrived: BODY_TIMEOUT_S + bytes / rate.
            later = self._deadline + self._body_bytes / MIN_BODY_BYTES_PER_S
            self._body_bytes = 0
            if later > self.loop.time():
                self._set_timer(later)
                return
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                cycle.disconnected = True  # the app's receive() now says http.disconnect
                cycle.message_event.set()
                self._answer_408(f"request body not received in time (at least "
                                 f"{MIN_BODY_BYTES_PER_S // 1024} KiB/s after "
                                 f"{BODY_TIMEOUT_S:.0f} s)")  # fmt: skip
        elif self._phase == "head" and self.conn.trailing_data[0]:
            self._answer_408(f"request headers not received within {HEADER_TIMEOUT_S:.0f} s")
        self.transport.close()

    def _answer_408(self, detail: str) -> None:
        """A complete answer written as bytes: h11 cannot answer a request it has not seen."""
        body = json.dumps({"detail": detail}).encode()
        head = (
            "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
