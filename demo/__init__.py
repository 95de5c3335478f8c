"""The try-it demo (``panicbutton demo``) and the broker tooling the demo and the tests
share (a Mosquitto child process, the embedded amqtt broker).

It may import anything: ``panicbutton``, ``device``, ``server`` and the demo's own
libraries (amqtt). Nothing imports it but the CLI's ``demo`` subcommand (lazily) and
the tests.
"""
