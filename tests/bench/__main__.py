"""``python -m tests.bench``: see :mod:`tests.bench.run`; ``--escalation-incidents N``
(default 30, 0 skips) sizes the escalation timing section (:mod:`tests.bench.escalation`)."""

from __future__ import annotations

from tests.bench.run import main

raise SystemExit(main())
