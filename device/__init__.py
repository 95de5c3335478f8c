"""The room unit agent: button, outbox, link to the broker, and the light.

A press travels button -> :mod:`device.agent` -> :mod:`device.outbox` (on disk
first) -> :mod:`device.link` (MQTT) and comes back as feedback that
:mod:`device.indicator` shows on the light.
"""
