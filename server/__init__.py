"""The central server: takes alerts from room units, pages staff, keeps the log.

Path of an alert: :mod:`server.units.ingest` (MQTT) -> :mod:`server.units.alerts`
-> :mod:`server.incidents` (committed with its audit event and the frozen plan of
:mod:`server.escalation.plans`) -> step 0's pages handed to :mod:`server.paging`
(Twilio SMS and calls) and, at once, feedback ``received`` to the room unit
(:mod:`server.units.feedback`) -> :mod:`server.routes.webhooks` (the staff member's reply) ->
:mod:`server.replies.sms` -> :mod:`server.response` -> ``acknowledged``. Later
steps are run by :mod:`server.escalation.scheduler` through :mod:`server.runner`.
:mod:`server.app` builds every part once, in this order, and
:mod:`server.services` holds them for the routes.

Layers, bottom first. A module imports only from its own layer or lower ones
(``tests/test_layers.py`` holds every module of ``server`` to these lines):

1. foundation: errors, strength, site, db, models, duty, replies.words, replies.codes,
   people.roles, people.tables, people.passwords, people.passkeys, mobile.tables,
   mobile.signing, units.tables, metrics, cluster
2. the log, settings and who is calling: log, settings, migrations, people.auth,
   people.directory, people.links, people.problems, people.presence, people.violence,
   people.signin, people.kiosk, roster.store, roster.edit, roster.transfer, roster.start,
   roster.commands, mobile.phones, mobile.retention
3. incidents and their escalation plans: escalation, incidents
4. paging: paging, urls
5. what goes out to people: units.feedback, news, replies.optout, receipts, rota,
   phones, mobile.news
6. alarms: units.alerts, units.statuses, response, runner, continuity, mobile.alarms,
   mobile.checkins, mobile.timer, mobile.positions
7. what comes in: replies.sms, replies.voice, replies.fallback, units.ingest,
   units.supervision, units.broker, units.wheelhouse, units.provision,
   units.enrolment, units.bulk, units.passwd, records
8. the container: services, health
9. HTTP: routes, console
10. the whole: app, commands, people.commands
"""
