"""Pure-ASGI middleware (BaseHTTPMiddleware would hide client disconnects from the routes)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.errors import PayloadTooLarge

_DRAIN_LIMIT = 256 * 1024 * 1024  # past this a client gets the 413 mid-upload instead of after it


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or while streaming.

    The rest of the body is read and discarded before answering, so a client that sends the whole upload
    before reading the response gets the 413 rather than a reset connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _drain(receive)
            await error_response(self._error(int(declared)))(scope, receive, send)
            return
        await self.app(scope, self._limited(receive), send)

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    if message.get("more_body", False):
                        await _drain(receive)
                    raise self._error(received)
            return message

        return limited_receive

    def _error(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is {size / 2**20:.1f} MiB or more; the limit is {self.max_bytes / 2**20:g} MiB "
            "(AVIARY_MAX_UPLOAD_MB) — send fewer or shorter files, or compressed audio"
        )


async def _drain(receive: Receive) -> None:
    drained = 0
    while drained < _DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))
