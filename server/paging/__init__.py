"""Paging: getting queued pages and texts to staff through the provider.

Owns the pager (``pager``: dispatch, bundling, recovery scheduling) and its
parts: the worker pool (``pool``), what a page says (``render``, ``messages``,
``fit`` for Twilio's size limits), handing it to the provider (``delivery``,
``notifier``), what became of each page (``status``), looking up half-sent
pages (``recovery``) and signed acknowledgement links (``links``).

May import the foundation (``panicbutton``, ``server.errors``, ``server.settings``,
``server.site``, ``server.models``) and ``server.log.append``; never the services
above it (units, news, the runner, routes, app): it reports each page's result
through the callable it is built with.
"""
