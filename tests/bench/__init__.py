"""``make bench``: press -> SMS latency against the no-logic floor, and the room unit's footprint.

Kept free of imports: ``agent_child`` runs as ``python -m tests.bench.agent_child``
and its memory figure must not include anything but the room unit agent.
"""
