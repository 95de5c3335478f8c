"""The incident log on the server: appending events in the caller's transaction
(``append``), personal data kept apart (``personal``), signing and checking
(``keeper``) and export bundles (``export``). Imports the foundation
(models, site) and :mod:`panicbutton.log`, nothing above.
"""
