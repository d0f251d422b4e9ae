"""Protection against slow and idle clients for the uvicorn servers (inference API and study app).

- `guarded_h11(header_timeout_s, max_connections)`: an h11 protocol class for `uvicorn.Config(http=...)`
  that closes a connection whose request line and headers are not complete `header_timeout_s` after
  its first byte (or after connecting), answering 408, and refuses connections beyond
  `max_connections` at once (closed at accept). Idle keep-alive connections are closed by uvicorn's
  own `timeout_keep_alive`.
- `BodyDeadline(app, body_timeout_s)`: ASGI middleware giving each request `body_timeout_s` from
  its headers to deliver the whole body; a client that trickles it is answered 408 with
  `Connection: close`, and the app sees the client as gone.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_BODY_408 = b'{"error": "the request headers took too long"}'
_TIMEOUT_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(_BODY_408)).encode() + b"\r\n\r\n" + _BODY_408)


def guarded_h11(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """An H11Protocol subclass with a header deadline and a connection cap (see the module doc)."""

    class GuardedH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _seen_cycle = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.warning("refusing a connection: %d open (max_connections %d)", len(self.connections), max_connections)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or self._in_request():
                return
            try:
                self.transport.write(_TIMEOUT_408)
            finally:
                self.transport.close()

        def _in_request(self) -> bool:
            return self.cycle is not None and self.cycle is self._seen_cycle and not self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            if not self._in_request():
                self._arm()  # bytes of a (next) request: its headers must be complete in time
            super().data_received(data)
            if self.cycle is not None and self.cycle is not self._seen_cycle:  # headers parsed
                self._seen_cycle = self.cycle
                self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11


class _BodyTimeout(Exception):
    pass


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within `body_timeout_s` of the headers."""

    def __init__(self, app, body_timeout_s: float) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        state = {"body_done": False, "timed_out": False, "started": False}

        async def guarded_receive():
            if state["timed_out"]:
                return {"type": "http.disconnect"}
            if state["body_done"]:
                return await receive()  # after the body: waits for the client to leave
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                state["timed_out"] = True
                if not state["started"]:
                    state["started"] = True
                    body = b'{"error": "the request body took too long (408)"}'
                    await send({"type": "http.response.start", "status": 408,
                                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                return {"type": "http.disconnect"}
            if message["type"] == "http.request" and not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message) -> None:
            if state["timed_out"]:
                return  # answered 408 already
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)
