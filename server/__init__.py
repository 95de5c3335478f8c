"""The central server: takes alerts from room units, pages staff, keeps the log.

Path of an alert: :mod:`server.ingest` (MQTT) -> :mod:`server.incidents`
(committed with its audit event) -> feedback ``received`` to the room unit ->
:mod:`server.paging` -> :mod:`server.notifier` (Twilio SMS) ->
:mod:`server.webhooks` (the staff member's reply) -> ``acknowledged``.
"""
