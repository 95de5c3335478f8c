"""Room units on the server side: their MQTT link (``ingest``), alerts
(``alerts``) and statuses (``statuses``), the feedback to their lights
(``feedback``), their supervision (``supervision``), and the broker and
provisioning tools (``broker``, ``provision``). Imports the layers below the
services (see :mod:`server`); never the routes or the app.
"""
