"""The live server answers as ``docs/openapi.json`` says, for any input (schemathesis).

Every check schemathesis has runs against the real server (uvicorn on loopback,
Mosquitto, the fake Twilio, SQLite and PostgreSQL): no 500, every status and
body as documented, invalid input refused, valid input accepted. Four callers:
nobody (every route but the ack links answers 401 or 403), the console with
the API token, room unit ``unit-1`` with its own token, and Twilio, which
signs its webhook calls as Twilio does. The Twilio webhooks answer 403 to the
others (no signature), as documented.

On SQLite every operation is called by every caller (Twilio only at its
webhooks: elsewhere it sends no credential, the very request nobody sends).
On PostgreSQL every operation is called once, by the caller it is for (Twilio
at the webhooks, the unit at its device routes, the console elsewhere): that
is the caller whose requests reach the database furthest; who may call what
does not depend on the database.

Examples per operation are few (``EXAMPLES``) so the suite stays quick; the
coverage phase still tries every documented boundary and type.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from twilio.request_validator import RequestValidator

from tests.conftest import missing
from tests.harness import (
    DEVICE_TOKENS,
    System,
    find_mosquitto,
    postgres_database,
    postgres_reachable,
    start_mosquitto,
)

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
#: Cases per operation and caller: 73 operations x 3 callers (+ Twilio at its 3 webhooks) on
#: SQLite and 73 x 1 on PostgreSQL; long runs belong in `make bench`.
EXAMPLES = 8


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    """One running system per database (``sqlite`` or ``postgres``, the test's parameter)
    for the whole module (starting one takes seconds)."""
    if find_mosquitto() is None:
        missing("mosquitto is not installed (apt install mosquitto)")
    folder = tmp_path_factory.mktemp(f"contract-{request.param}")
    with start_mosquitto(folder / "mosquitto") as broker:
        if request.param == "sqlite":
            with System(
                mqtt_port=broker.port,
                users=broker.users,
                database_url=f"sqlite:///{folder / 'contract.sqlite3'}",
                folder=folder,
                broker=broker,
            ) as system:
                yield system
            return
        if not postgres_reachable():
            missing("PostgreSQL is not reachable")
        with (
            postgres_database(f"pb_contract_{secrets.token_hex(4)}") as url,
            System(
                mqtt_port=broker.port,
                users=broker.users,
                database_url=url,
                folder=folder,
                broker=broker,
            ) as system,
        ):
            yield system


@pytest.fixture(params=["nobody", "console", "unit"])
def caller(request: pytest.FixtureRequest, live: System) -> str:
    return str(request.param)


def intended(path: str) -> str:
    """The caller an operation is for: Twilio at its webhooks, the unit at its device
    routes, the console everywhere else."""
    if path.startswith("/twilio/"):
        return "twilio"
    if path.startswith("/api/v1/devices/"):
        return "unit"
    return "console"


def credentials(caller: str, case: schemathesis.Case[Any], live: System) -> dict[str, str]:
    """The headers of each caller: none, a manager's personal API token, a unit's own token, or
    Twilio's signature over the URL it would call and the form (webhooks only)."""
    if caller == "twilio":
        if not case.path.startswith("/twilio/"):
            return {}
        query = urlencode(case.query or {}, doseq=True)
        url = live.settings.public_base_url + case.formatted_path + (f"?{query}" if query else "")
        form = case.body if isinstance(case.body, dict) else {}
        signed = {k: v for k, v in form.items() if isinstance(v, str)}
        signature = RequestValidator(live.twilio.auth_token).compute_signature(url, signed)
        return {"X-Twilio-Signature": signature}
    if caller == "console":
        if id(live) not in CONSOLE:
            CONSOLE[id(live)] = live.headers("manager")
        return CONSOLE[id(live)]
    token = {"nobody": "", "unit": DEVICE_TOKENS["unit-1"]}[caller]
    return {"Authorization": f"Bearer {token}"} if token else {}


#: The console's headers (a manager's personal token), one per running system.
CONSOLE: dict[int, dict[str, str]] = {}


#: What schemathesis accepts for data valid by the schema: its default, and per route
#: what the schema cannot know (documented, each with a message that says why).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]
SEMANTIC = [
    # A link token of the right shape that the server did not sign, or that has expired.
    ("^/ack/", ["410"]),
    # The same for a page's map link (server/console/maps.py).
    ("^/map/", ["410"]),
    # A one-time sign-in link that is not ours; a password too weak, a passkey answer
    # that is no answer (server/routes/signin.py says which).
    ("^/enrol/", ["410", "422"]),
    # The same for a phone's enrolment link; a key that is no P-256 key, PINs or a number
    # the server refuses (server/mobile/phones.py says which).
    ("^/api/v1/phone/enrol$", ["410", "422"]),
    # A staff id of the right shape that the site file does not hold.
    ("^/api/v1/(duty/takeover|incidents/[^/]+/(acknowledge|resolve))$", ["422"]),
    # A scope of the right shape that names no incident or person, or is not a scope.
    ("^/api/v1/log/export$", ["400"]),
    # A configuration the site's rules refuse (a shift for nobody, steps out of order,
    # a room id taken): the whole site is checked before anything is stored.
    ("^/api/v1/site", ["422"]),
    # A passkey answer that is no answer, a password too weak, a scope that is no right.
    ("^/api/v1/me/(passkeys|password|tokens)$", ["422"]),
    # An id already taken, a number not in E.164 or someone else's, an unknown role.
    ("^/api/v1/people", ["422"]),
    # A room the site does not have; a period that ends before it starts.
    ("^/api/v1/presence", ["422"]),
    # A phone's enrolment: a link that is not ours or was used (410); a key that is not
    # a P-256 key, a PIN a guesser tries first or both PINs the same (422).
    ("^/api/v1/phone/enrol$", ["410", "422"]),
]
GENERATION = {"mode": "all", "max-examples": EXAMPLES, "no-shrink": True}
CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": GENERATION,
        "operations": [
            {
                "include-path-regex": path,
                "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED + extra}},
            }
            for path, extra in SEMANTIC
        ],
    }
)
schema = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)
#: The Twilio webhooks alone (no route of SEMANTIC is among them). A schema loaded with
#: per-route settings ignores ``include``, so this one is loaded without them.
webhooks = schemathesis.openapi.from_path(
    OPENAPI, config=SchemathesisConfig.from_dict({"generation": GENERATION})
).include(path_regex="^/twilio/")


SETTINGS = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("live", ["sqlite"], indirect=True)
@schema.parametrize()
@SETTINGS
def test_server_answers_as_documented(
    case: schemathesis.Case[Any], live: System, caller: str
) -> None:
    case.call_and_validate(base_url=live.base_url, headers=credentials(caller, case, live))


@pytest.mark.parametrize("live", ["sqlite"], indirect=True)
@webhooks.parametrize()
@SETTINGS
def test_twilio_webhooks_answer_twilio_as_documented(
    case: schemathesis.Case[Any], live: System
) -> None:
    case.call_and_validate(base_url=live.base_url, headers=credentials("twilio", case, live))


@pytest.mark.parametrize(
    "live", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
@schema.parametrize()
@SETTINGS
def test_server_on_postgresql_answers_its_caller_as_documented(
    case: schemathesis.Case[Any], live: System
) -> None:
    caller = intended(case.path)
    case.call_and_validate(base_url=live.base_url, headers=credentials(caller, case, live))
