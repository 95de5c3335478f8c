"""HTTP from the tests, and how long a test waits for what it expects.

httpx's one-call functions give up after 5 s, and the suite's helpers used to wait
10 s. On a loaded 2-core machine running three test workers, each with its own
broker, server and fake Twilio, a request or a page can take longer than that
without anything being wrong, and a test that fails then says nothing about the
product. Tests assert what happens; how fast it happens is measured by
``make bench`` against a floor measured in the same run.
"""

from __future__ import annotations

from functools import partial
from typing import Final

import httpx

#: Seconds a test waits for what it expects before it fails.
PATIENCE: Final = 30.0

get = partial(httpx.get, timeout=PATIENCE)
post = partial(httpx.post, timeout=PATIENCE)
put = partial(httpx.put, timeout=PATIENCE)
patch = partial(httpx.patch, timeout=PATIENCE)
delete = partial(httpx.delete, timeout=PATIENCE)
