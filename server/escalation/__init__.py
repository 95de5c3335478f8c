"""Escalation: the plan frozen when an incident opens (``plans``), its steps
carried out as persisted jobs (``steps``), the reply codes its pages carry
(``reply_codes``), and the thread that runs them when due (``scheduler``, which
takes the job runner, :mod:`server.runner`, as a callable). Imports the
foundation and :mod:`server.log`; :mod:`server.incidents` imports it, never
the other way.
"""
