"""Paging staff: the texts (``messages``), the provider behind a seam
(``notifier``: Twilio or the console), sending queued pages (``pager``) and
the signed links in them (``links``). Imports the foundation and
:mod:`server.log`; it reports each page's result through the callable it is
built with, so it never imports the services above it.
"""
