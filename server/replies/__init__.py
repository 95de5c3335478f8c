"""What staff send back: SMS replies (codes, DUTY, opt-out words) and keys pressed
in a page call. ``words`` reads a reply (imports nothing of the server);
``codes`` keeps the limits on wrong codes; ``sms``, ``voice`` and ``optout``
act on them through the response, rota and pager (never the routes).
"""
