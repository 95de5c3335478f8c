"""The mobile button: a worker's own phone raises alarms through the same chain as a
room unit (frozen plan, pages, acknowledgement, "help is coming", the log).

A phone is enrolled once from a one-time link a manager gives; the page makes a
key pair it keeps (WebCrypto, not extractable) and signs every request with it
(:mod:`server.mobile.signing`). Its alarms are incidents whose device and room are
``-phone-<phone id>`` (:data:`server.site.PHONE_PREFIX`): the log names the phone,
never the worker, and the phone's row (personal data) says whose it is.
"""
