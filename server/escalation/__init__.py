"""Escalation: the plan frozen when an incident opens and its persisted jobs
(``plans``), and the thread that runs them when due (``scheduler``, which
takes the job runner, :mod:`server.runner`, as a callable). Imports the
foundation and :mod:`server.log`; :mod:`server.incidents` imports it, never
the other way.
"""
