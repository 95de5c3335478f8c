"""People: accounts, roles and rights, sign-in, API tokens, presence, the violence register.

Owns the tables of :mod:`server.people.tables` and the closed sets of
:mod:`server.people.roles`. Everything that names a person in the log names
them by their pseudonymous id (``people.id``); their name and number live in
``people`` only, as personal data.

Layers (see :mod:`server`): ``roles`` and ``tables`` are foundation (layer 1).
"""
