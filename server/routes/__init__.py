"""The HTTP side: each route parses, calls a service from
:class:`server.services.Services` (``deps``) and answers; only this package
knows HTTP. Never the session or the log directly: from below the services it
takes only types (models' enums, the log's error types and its zip helper).
"""
