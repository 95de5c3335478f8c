"""The server's side of the incident log.

Owns appending entries (``append``), the keeper that proves, signs and watches the
log (``keeper``, ``stored``, ``failure``), the checkpoint file and signing key
(``signing``), the site's configuration as recorded (``config``), personal data
kept apart and purged at the end of its retention (``personal``), and export bundles
(``export``). The format itself is ``panicbutton.log``.

May import the foundation (``server.errors``, ``settings``, ``site``, ``db``,
``models``) and ``panicbutton``; nothing else of the server.
"""
