"""The console: the pages managers, staff and the reception screen use in a browser.

Server-rendered (Jinja2, French, Dutch and English from Babel catalogues), live
parts over Server-Sent Events, a few small scripts from ``static/`` and no
inline script (the Content-Security-Policy forbids it). Pages read through the
services; what they change goes through the HTTP API (``/api/v1``) with the
session's CSRF token, so every rule of the API holds in the browser too.
"""
