"""The site's live configuration: rooms, rosters and escalation in the database.

:mod:`server.roster.store` builds the :class:`~server.site.Site` in force from the
newest ``site_versions`` row and the people who hold the staff or manager role;
:mod:`server.roster.edit` makes a new version (checked, logged); and
:mod:`server.roster.transfer` reads and writes the site file (import, export).
"""
