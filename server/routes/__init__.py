"""The HTTP side: each route parses, calls a service from
:class:`server.services.Services` (``deps``) and answers; only this package
knows HTTP. Never the session or the log directly (``records`` still does,
until its own service exists).
"""
