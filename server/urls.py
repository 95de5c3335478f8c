"""The public URLs the server hands out: Twilio's callbacks and the signed
acknowledgement links in pages (all None without a public base URL)."""

from __future__ import annotations

from datetime import datetime

from server.paging.links import LIST, MAP, make_token


class PublicUrls:
    """URLs under ``PANICBUTTON_PUBLIC_BASE_URL``; links also need the link secret."""

    def __init__(self, *, public_base_url: str, link_secret: str) -> None:
        self._public = public_base_url
        self._link_secret = link_secret

    def callback(self, path: str) -> str | None:
        """The public URL Twilio calls back on for ``path``; None without a public URL."""
        return self._public + path if self._public else None

    def ack_link(self, page_id: int, created: datetime) -> str | None:
        """A signed single-use acknowledgement link for a page, or None without links.
        Its expiry counts from the page's creation, so the same page always renders the
        same text (the crash check compares texts)."""
        if not (self._public and self._link_secret):
            return None
        return f"{self._public}/ack/{make_token(self._link_secret, page_id, created)}"

    def list_link(self, page_id: int, created: datetime) -> str | None:
        """A signed link to the open alarms of the person a page is for (a bundle names
        only the rooms that fit), or None without links."""
        if not (self._public and self._link_secret):
            return None
        token = make_token(self._link_secret, page_id, created, kind=LIST)
        return f"{self._public}/ack/{token}"

    def map_link(self, page_id: int, created: datetime) -> str | None:
        """A signed link to the map of the positions a worker's phone shares during the
        alarm this page is about (expires as an acknowledgement link does), or None."""
        if not (self._public and self._link_secret):
            return None
        return f"{self._public}/map/{make_token(self._link_secret, page_id, created, kind=MAP)}"
