"""Installing a room unit from the server, over HTTP as the unit's scripts call it
(``firmware_config/unit_fetch.py``): a one-time enrolment code for the unit's bundle,
the wheelhouse for the unit's token, and the unit's install report on the units page."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import create_engine, select

from server.app import Server
from server.console import i18n
from server.people.roles import Role
from server.people.tables import SignInFailure
from server.routes.install import UNKNOWN_CODE
from server.units import enrolment
from server.units.provision import Secrets, bundle_files
from server.units.tables import UnitEnrolment, UnitInstall
from server.units.wheelhouse import INSTALLER
from tests.harness import DEVICE_TOKENS, bearer
from tests.server.signin_kit import browser, clock, running
from tests.server.units_kit import hand_made_wheelhouse, signed_in

CA = "-----BEGIN CERTIFICATE-----\nMIIB (a site CA)\n-----END CERTIFICATE-----\n"


def new_code(server: Server, device_id: str = "unit-2") -> tuple[str, dict[str, str], Secrets]:
    """A code for ``device_id``'s bundle, as adding a unit on the console makes one."""
    secret = Secrets.new()
    files = bundle_files(
        device_id=device_id,
        label="Room 2",
        broker_host="mqtt.house.example",
        server_url="https://alarm.example.test",
        ca_pem=CA,
        secret=secret,
        by="the tests",
    )
    services = server.services
    with services.sessions.begin() as s:
        code = enrolment.create(
            s, device_id=device_id, files=files, by="manager", now=services.clock.now()
        )
    return code, files, secret


def test_a_code_gives_its_bundle_and_the_server_keeps_it_sealed(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        code, files, secret = new_code(server)
        with server.services.sessions() as s:
            [row] = s.scalars(select(UnitEnrolment))
            stored = bytes(row.sealed) + row.code_sha256.encode()
        # Neither the secrets nor the code are in the database in clear.
        for clear in (secret.password, secret.token, code, code.replace("-", ""), "[mqtt]"):
            assert clear.encode() not in stored
        got = browser(server).post("/api/v1/enrol", json={"code": code})
        assert got.status_code == 200, got.text
        assert got.json() == {"device_id": "unit-2", "files": files}
        sent = got.json()["files"]
        assert set(sent) == {"device.toml", "mqtt-password", "device-token", "ca.crt"}
        assert sent["mqtt-password"].strip() == secret.password
        assert sent["device-token"].strip() == secret.token
        # The server noted when the code was first used, and no longer shows it waiting.
        with server.services.sessions() as s:
            [row] = s.scalars(select(UnitEnrolment))
            assert row.redeemed_at == clock(server).now()
            assert enrolment.pending(s, now=clock(server).now()) == {}


def test_a_lost_answer_is_asked_again_within_the_grace_then_never(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        code, files, _ = new_code(server)
        unit = browser(server)
        first = unit.post("/api/v1/enrol", json={"code": code})
        assert first.status_code == 200, first.text
        # The unit never got that answer: it asks again with the code on its card, and
        # again, up to the end of the grace counted from the first use.
        for wait in (60, enrolment.GRACE.total_seconds() - 61):
            clock(server).advance(wait)
            again = unit.post("/api/v1/enrol", json={"code": code})
            assert again.status_code == 200, again.text
            assert again.json() == first.json() == {"device_id": "unit-2", "files": files}
        # Then never: answered as an unknown code, which says what to do.
        clock(server).advance(1)
        used = unit.post("/api/v1/enrol", json={"code": code})
        unknown = unit.post("/api/v1/enrol", json={"code": "ABCD-EFGH-JKMN-PQRS"})
        for answer in (used, unknown):
            assert answer.status_code == 404
            assert answer.json()["detail"] == UNKNOWN_CODE
        assert "add the unit again with the same room id and unit id" in used.json()["detail"]
        # The spent code goes when the next code is made.
        new_code(server, "unit-3")
        with server.services.sessions() as s:
            assert [r.device_id for r in s.scalars(select(UnitEnrolment))] == ["unit-3"]


def test_a_new_code_for_a_unit_replaces_its_earlier_one(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        first, _, _ = new_code(server)
        second, files, _ = new_code(server)
        unit = browser(server)
        assert unit.post("/api/v1/enrol", json={"code": first}).status_code == 404
        assert unit.post("/api/v1/enrol", json={"code": second}).json()["files"] == files


def test_a_code_works_for_seven_days_only(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        late, _, _ = new_code(server, "unit-2")
        in_time, _, _ = new_code(server, "unit-3")
        clock(server).advance((enrolment.LIFETIME - timedelta(minutes=1)).total_seconds())
        unit = browser(server)
        assert unit.post("/api/v1/enrol", json={"code": in_time}).status_code == 200
        clock(server).advance(61)
        expired = unit.post("/api/v1/enrol", json={"code": late})
        assert expired.status_code == 404
        assert expired.json()["detail"] == UNKNOWN_CODE
        # A code that matched nothing deletes nothing (it writes nothing): the expired
        # code, and the used one past its grace, go when the next code is made.
        with server.services.sessions() as s:
            assert {r.device_id for r in s.scalars(select(UnitEnrolment))} == {"unit-2", "unit-3"}
        clock(server).advance(enrolment.GRACE.total_seconds())
        new_code(server, "unit-4")
        with server.services.sessions() as s:
            assert [r.device_id for r in s.scalars(select(UnitEnrolment))] == ["unit-4"]


TYPED: dict[str, Callable[[str], str]] = {
    "lower case": str.lower,
    "without dashes": lambda code: code.replace("-", ""),
    "with spaces": lambda code: code.replace("-", " "),
    "O for 0": lambda code: code.replace("0", "O"),
}


@pytest.mark.parametrize("typed", TYPED.values(), ids=TYPED.keys())
def test_a_code_typed_as_people_type_it_works(
    typed: Callable[[str], str], database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        code = ""
        while "0" not in code:  # a code with a 0, so that reading it as O is tried
            code, _, _ = new_code(server)
        got = browser(server).post("/api/v1/enrol", json={"code": typed(code)})
        assert got.status_code == 200, got.text
        assert got.json()["device_id"] == "unit-2"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"code": "ABCD-EFGH"}, 404),  # too short to be a code
        ({"code": "ABCD-EFGH-JKMN-PQRU"}, 404),  # U is not in the alphabet
        ({"code": "ÀBCD-EFGH-JKMN-PQRS"}, 404),
        ({"code": ""}, 422),
        ({"code": "A" * 41}, 422),
        ({}, 422),
        ({"code": "ABCD-EFGH-JKMN-PQRS", "device_id": "unit-1"}, 422),
    ],
)
def test_a_malformed_code_is_refused(
    body: dict[str, str], status: int, database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        new_code(server)
        answer = browser(server).post("/api/v1/enrol", json=body)
        assert answer.status_code == status
        if status == 404:
            assert answer.json()["detail"] == UNKNOWN_CODE
        # Nothing was written: no failure counted, the code still waits.
        with server.services.sessions() as s:
            assert s.scalars(select(SignInFailure)).all() == []
            assert set(enrolment.pending(s, now=clock(server).now())) == {"unit-2"}


@contextmanager
def another_writer(database_url: str) -> Iterator[None]:
    """Another connection holds the writer lock (SQLite: one writer at a time for the
    whole database, alerts included) or locks the tables an enrolment writes against
    any change (PostgreSQL), until the block ends."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql(
                    "LOCK TABLE unit_enrolments, sign_in_failures IN EXCLUSIVE MODE"
                )
            try:
                yield
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def tried_while_another_writes(
    database_url: str, client: TestClient, codes: list[str]
) -> list[Response]:
    """The answers to ``codes`` sent while :func:`another_writer` holds the database; an
    answer that waits for the writer fails the test (after the writer lets go)."""
    pool = ThreadPoolExecutor(1)
    try:
        with another_writer(database_url):
            sent = [pool.submit(client.post, "/api/v1/enrol", json={"code": c}) for c in codes]
            try:
                return [answer.result(timeout=10) for answer in sent]
            except TimeoutError:
                pytest.fail("an enrolment that cannot match waited for the database's writer")
    finally:
        pool.shutdown(wait=True)


def test_failed_codes_from_one_address_are_refused_for_a_while(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        code, files, _ = new_code(server)
        guesser = browser(server, address="198.51.100.7")
        # A malformed code cannot match anything: it is not counted.
        for _ in range(2 * enrolment.PER_ADDRESS):
            assert guesser.post("/api/v1/enrol", json={"code": "ABCD-EFGH"}).status_code == 404
        for _ in range(enrolment.PER_ADDRESS):
            wrong = guesser.post("/api/v1/enrol", json={"code": enrolment.new_code()})
            assert wrong.status_code == 404
            assert wrong.json()["detail"] == UNKNOWN_CODE
        # The next try from that address is refused before its code is looked at, the
        # right code too (which stays unused), and says how long to wait.
        for tried in (enrolment.new_code(), code):
            refused = guesser.post("/api/v1/enrol", json={"code": tried})
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == str(15 * 60 + 1)
            assert refused.json()["detail"] == (
                "too many failed enrolment codes for your address: wait 16 minutes and try "
                "again, or check the code in enrol.txt against the one the console's Units "
                "page gave"
            )
        with server.services.sessions() as s:
            assert set(enrolment.pending(s, now=clock(server).now())) == {"unit-2"}
        # Another address is not held back by it.
        got = browser(server, address="203.0.113.5").post("/api/v1/enrol", json={"code": code})
        assert got.status_code == 200, got.text
        assert got.json()["files"] == files
        # Once the window has passed, the address is heard again.
        clock(server).advance(15 * 60 + 1)
        assert guesser.post("/api/v1/enrol", json={"code": code}).status_code == 404


def test_a_code_that_cannot_match_does_not_wait_for_the_databases_writer(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        code, _, _ = new_code(server)
        guesser = browser(server, address="198.51.100.7")
        for _ in range(enrolment.PER_ADDRESS):
            assert (
                guesser.post("/api/v1/enrol", json={"code": enrolment.new_code()}).status_code
                == 404
            )
        # While another writer (an alert being stored) holds the database, a malformed
        # code and an address already refused are answered at once: they write nothing.
        malformed, refused = tried_while_another_writes(
            database_url, guesser, ["ABCD-EFGH-JKMN-PQRU", enrolment.new_code()]
        )
        assert malformed.status_code == 404
        assert malformed.json()["detail"] == UNKNOWN_CODE
        assert refused.status_code == 429
        # Nothing was counted meanwhile, and the code still waits for its unit.
        with server.services.sessions() as s:
            assert len(s.scalars(select(SignInFailure)).all()) == enrolment.PER_ADDRESS
            assert set(enrolment.pending(s, now=clock(server).now())) == {"unit-2"}
        assert browser(server).post("/api/v1/enrol", json={"code": code}).status_code == 200


WHEELHOUSE = "/api/v1/devices/unit-1/wheelhouse"


def test_the_wheelhouse_needs_the_units_own_token(database_url: str, tmp_path: Path) -> None:
    house = hand_made_wheelhouse(tmp_path / "wheelhouse")
    with running(database_url, tmp_path, wheelhouse_dir=house) as server:
        unit = browser(server)
        for headers in ({}, bearer("not-the-token"), bearer(DEVICE_TOKENS["unit-2"])):
            answer = unit.get(WHEELHOUSE, headers=headers)
            assert answer.status_code == 401
            assert answer.json()["detail"] == "unknown unit or wrong token"
            assert answer.headers["www-authenticate"] == "Bearer"


def test_the_wheelhouse_is_one_tar_of_the_folder(database_url: str, tmp_path: Path) -> None:
    house = hand_made_wheelhouse(tmp_path / "wheelhouse", version="9.8.7")
    with running(database_url, tmp_path, wheelhouse_dir=house) as server:
        answer = browser(server).get(WHEELHOUSE, headers=bearer(DEVICE_TOKENS["unit-1"]))
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/x-tar"
        assert answer.headers["x-panicbutton-version"] == "9.8.7"
        with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
            got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        assert set(got) == {p.name for p in house.iterdir()}
        assert set(INSTALLER) <= set(got)
        for name, body in got.items():
            assert body == (house / name).read_bytes(), name


def test_no_wheelhouse_or_a_broken_one_is_said_plainly(database_url: str, tmp_path: Path) -> None:
    token = bearer(DEVICE_TOKENS["unit-1"])
    with running(database_url, tmp_path) as server:
        answer = browser(server).get(WHEELHOUSE, headers=token)
        assert answer.status_code == 503
        assert answer.json()["detail"] == (
            "this server serves no wheelhouse: build one with `panicbutton wheelhouse build "
            "--out DIR` and set PANICBUTTON_WHEELHOUSE_DIR=DIR"
        )
    house = hand_made_wheelhouse(tmp_path / "broken")
    (house / "firstboot.sh").unlink()
    with running(database_url, tmp_path, wheelhouse_dir=house) as server:
        answer = browser(server).get(WHEELHOUSE, headers=token)
        assert answer.status_code == 503
        assert answer.json()["detail"] == (
            f"the wheelhouse {house} lacks firstboot.sh: build it with "
            f"`panicbutton wheelhouse build --out {house}`"
        )


REPORT = "/api/v1/devices/unit-1/install"


def test_an_install_report_shows_on_the_units_page(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        unit = browser(server)
        token = bearer(DEVICE_TOKENS["unit-1"])
        first = {"action": "install", "version": "1.0.0", "passed": True, "lines": ["ok"]}
        assert unit.post(REPORT, json=first, headers=token).status_code == 204
        clock(server).advance(3600)
        at = i18n.when(clock(server).now(), language="en", timezone=server.services.site.timezone)
        lines = ["config: ok", "broker: <b>refused</b> (not authorised)"]
        second = {"action": "upgrade", "version": "1.1.0", "passed": False, "lines": lines}
        assert unit.post(REPORT, json=second, headers=token).status_code == 204
        assert unit.post(REPORT, json=first).status_code == 401

        page = signed_in(server, "fitter", (Role.INSTALLER,)).get("/console/units").text
        row = page.split('id="unit-room-1"')[1].split("</tr>")[0]
        cell = row.split('class="install">')[1].split("</td>")[0]
        # The newest report: when, what, the result, and the check's lines folded away.
        assert cell.strip().startswith(f"{at}:"), cell
        assert "upgraded to <bdi>1.1.0</bdi>" in cell
        assert "check failed" in cell
        assert "<details><summary>What the check said" in cell
        # The unit's text is shown as text, never as markup.
        assert "<bdi>broker: &lt;b&gt;refused&lt;/b&gt; (not authorised)</bdi>" in cell
        assert "<bdi>config: ok</bdi>" in cell
        other = page.split('id="unit-room-2"')[1].split("</tr>")[0]
        assert "no report" in other


def test_a_unit_keeps_its_last_reports_and_the_page_shows_the_newest(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        unit = browser(server)
        other = {"action": "install", "version": "0.9.0", "passed": True}
        answer = unit.post(
            "/api/v1/devices/unit-2/install", json=other, headers=bearer(DEVICE_TOKENS["unit-2"])
        )
        assert answer.status_code == 204
        token = bearer(DEVICE_TOKENS["unit-1"])
        sent = [f"1.0.{n}" for n in range(enrolment.KEPT_REPORTS + 5)]
        for version in sent:
            clock(server).advance(60)
            report = {"action": "upgrade", "version": version, "passed": True}
            assert unit.post(REPORT, json=report, headers=token).status_code == 204
        with server.services.sessions() as s:
            kept = s.scalars(select(UnitInstall).order_by(UnitInstall.id)).all()
            newest = enrolment.last_installs(s, {"unit-1", "unit-2", "unit-3"})
        assert [(r.device_id, r.version) for r in kept] == [("unit-2", "0.9.0")] + [
            ("unit-1", v) for v in sent[-enrolment.KEPT_REPORTS :]
        ]
        assert {d: r.version for d, r in newest.items()} == {"unit-1": sent[-1], "unit-2": "0.9.0"}

        page = signed_in(server, "fitter", (Role.INSTALLER,)).get("/console/units").text
        cell = page.split('id="unit-room-1"')[1].split("</tr>")[0].split('class="install">')[1]
        assert f"upgraded to <bdi>{sent[-1]}</bdi>" in cell
        cell = page.split('id="unit-room-2"')[1].split("</tr>")[0].split('class="install">')[1]
        assert "installed <bdi>0.9.0</bdi>" in cell


@pytest.mark.parametrize(
    ("body", "wrong"),
    [
        ({"action": "reinstall", "version": "1", "passed": True}, "action"),
        ({"action": "install", "version": "1", "passed": True, "lines": ["x"] * 41}, "lines"),
        ({"action": "install", "version": "1", "passed": True, "lines": ["x" * 301]}, "lines"),
        ({"action": "install", "version": "", "passed": True}, "version"),
        ({"action": "install", "version": "1", "passed": "maybe"}, "passed"),
        ({"action": "install", "version": "1", "passed": True, "by": "me"}, "by"),
    ],
)
def test_a_bad_report_is_refused_and_nothing_is_stored(
    body: dict[str, object], wrong: str, database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        answer = browser(server).post(REPORT, json=body, headers=bearer(DEVICE_TOKENS["unit-1"]))
        assert answer.status_code == 422
        assert wrong in {str(part) for e in answer.json()["detail"] for part in e["loc"]}
        with server.services.sessions() as s:
            assert enrolment.last_installs(s, {"unit-1"}) == {}
