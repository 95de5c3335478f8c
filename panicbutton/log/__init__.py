"""The incident log's format, on the side of whoever checks it: what an entry and a
checkpoint are, and the standalone verifier (``panicbutton audit verify``).

It owns the written contract (``VERIFY.md`` says the same in prose): canonical JSON
(:mod:`.canonical`), Merkle trees (:mod:`.merkle`), entries and commitments
(:mod:`.spec`), keys and signed checkpoints (:mod:`.checkpoints`), the verifier
(:mod:`.verify`, with :mod:`.bundles`, :mod:`.integrity`, :mod:`.partial`,
:mod:`.commitments`, :mod:`.meaning`, :mod:`.verdict`) and the manager's report
(:mod:`.report`). The server's side of the log (appending, signing, exporting) is
``server/log/``.

Standard library and ``cryptography`` only, so an inspector can run the verifier with
nothing else installed; its modules import ``panicbutton.log.*`` and ``panicbutton.errors``
(the project's error base), nothing else of ours (``tests/log/test_standalone.py`` checks it).
"""
