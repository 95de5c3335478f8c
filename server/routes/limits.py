"""A bound on request bodies, so that no request is read into memory without limit.

Every body the server takes is small: an alert is at most 4 KiB, a note at most
4,000 characters, a Twilio webhook a few hundred bytes. A body over
:data:`MAX_BODY` is refused with 413 before it is read (by its
``Content-Length``) or as soon as it streams past the limit (chunked).
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The largest request body the server reads, in bytes.
MAX_BODY = 64 * 1024


def too_large(size: str) -> str:
    return (
        f"the request body is {size}; at most {MAX_BODY} bytes are accepted "
        "(alerts, notes and webhooks are all far smaller)"
    )


class BodyLimit:
    """ASGI middleware: 413 for a body over :data:`MAX_BODY` bytes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        # (The HTTP server has refused a Content-Length that is not a number already.)
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            answer = JSONResponse({"detail": too_large(f"{int(declared)} bytes")}, status_code=413)
            await answer(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > MAX_BODY:
                    # An HTTPException from the body stream becomes the answer (FastAPI
                    # re-raises it as is while reading a body).
                    raise HTTPException(413, too_large(f"over {MAX_BODY} bytes"))
            return message

        await self.app(scope, bounded, send)
