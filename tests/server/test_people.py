"""Managing people over the API: accounts with a one-time enrolment link, roles and
inspector grants, the last manager, closing; only managers may."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.people.roles import Role
from server.people.signin import set_password
from server.people.tables import EnrolmentLink
from tests.server.people_helpers import (
    BASE_URL,
    Served,
    add_person,
    browser_as,
    client_as,
    entries,
    log_bodies,
    served,
)


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Served]:
    with served(database_url, tmp_path) as running:
        add_person(running.server, "boss", Role.MANAGER, phone="+32470000099", confirmed=True)
        yield running


@pytest.fixture
def boss(site: Served) -> TestClient:
    return browser_as(site.server, "boss")


NEW = {
    "id": "night-staff",
    "name": "Ann Peeters",
    "phone": "+32 470 11 12 22",
    "language": "nl",
    "roles": ["staff"],
}


def test_manager_creates_a_person_with_a_one_time_enrolment_link(
    site: Served, boss: TestClient
) -> None:
    answer = boss.post("/api/v1/people", json=NEW)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["link"].startswith(f"{BASE_URL}/enrol/")
    token = body["link"].rsplit("/", 1)[1]
    assert [g["role"] for g in body["roles"]] == ["staff"]
    assert (body["phone"], body["phone_confirmed"]) == ("+32 4** ** ** 22", False)
    with site.server.services.sessions() as s:
        link = s.get_one(EnrolmentLink, hashlib.sha256(token.encode()).hexdigest())
        assert (link.person_id, link.purpose, link.used_at) == ("night-staff", "enrol", None)
        assert link.expires_at - link.created_at == timedelta(hours=72)
    # The log names ids only: who was added, by whom, the role and the link.
    assert entries(site.server, "person.added", "role.granted", "signin.link_issued")[-3:] == [
        ("person.added", {"person": "night-staff", "by": "boss"}),
        ("role.granted", {"person": "night-staff", "role": "staff", "by": "boss", "until": None}),
        (
            "signin.link_issued",
            {
                "person": "night-staff",
                "purpose": "enrol",
                "by": "boss",
                "until": entries(site.server, "signin.link_issued")[-1][1]["until"],
            },
        ),
    ]
    for raw in log_bodies(site.server):
        assert b"Ann" not in raw
        assert b"470111222" not in raw
        assert token.encode() not in raw
    # Listed by id, beside the site's staff (imported at start) and the boss.
    listed = boss.get("/api/v1/people").json()
    assert [p["id"] for p in listed] == [
        "boss",
        "floor",
        "manager",
        "night-staff",
        "reception",
    ]
    assert boss.get("/api/v1/people/night-staff").json()["name"] == "Ann Peeters"


@pytest.mark.parametrize("role", [Role.STAFF, Role.WORKER, Role.INSPECTOR, Role.INSTALLER])
def test_people_routes_refuse_everyone_but_managers(
    site: Served, boss: TestClient, role: Role
) -> None:
    add_person(site.server, "someone", role)
    client = client_as(site.server, "someone")
    tries = [
        client.get("/api/v1/people"),
        client.get("/api/v1/phone-problems"),
        client.get("/api/v1/people/boss"),
        client.post("/api/v1/people", json=NEW),
        client.patch("/api/v1/people/boss", json={"name": "x"}),
        client.post("/api/v1/people/someone/roles", json={"role": "manager"}),
        client.delete("/api/v1/people/boss/roles/manager"),
        client.post("/api/v1/people/boss/links", json={"purpose": "recover"}),
        client.post("/api/v1/people/boss/close"),
    ]
    assert [t.status_code for t in tries] == [403] * len(tries)
    assert "'people'" in tries[0].json()["detail"]
    assert TestClient(site.server.app).get("/api/v1/people").status_code == 401
    # Refused, they changed nothing: nobody added, boss still a manager.
    listed = boss.get("/api/v1/people").json()
    assert [p["id"] for p in listed] == ["boss", "floor", "manager", "reception", "someone"]
    assert [r["role"] for r in boss.get("/api/v1/people/boss").json()["roles"]] == ["manager"]


def test_an_inspector_grant_must_end_within_90_days(site: Served, boss: TestClient) -> None:
    add_person(site.server, "auditor")
    now = site.clock.now()
    grant = "/api/v1/people/auditor/roles"
    forever = boss.post(grant, json={"role": "inspector"})
    assert forever.status_code == 422
    assert "must end" in forever.json()["detail"]
    too_long = boss.post(
        grant, json={"role": "inspector", "until": (now + timedelta(days=91)).isoformat()}
    )
    assert too_long.status_code == 422
    assert "90 days" in too_long.json()["detail"]
    until = now + timedelta(days=30)
    granted = boss.post(grant, json={"role": "inspector", "until": until.isoformat()})
    assert granted.status_code == 200, granted.text
    [role] = granted.json()["roles"]
    assert role["role"] == "inspector"
    assert role["until"] is not None
    # Creating an inspector says so too.
    refused = boss.post(
        "/api/v1/people", json={"id": "insp-2", "name": "I", "roles": ["inspector"]}
    )
    assert refused.status_code == 422
    assert boss.get("/api/v1/people/insp-2").status_code == 404


def test_the_last_manager_cannot_demote_or_close_themselves(site: Served, boss: TestClient) -> None:
    # The site's manager (imported at start) steps down first: boss is then the last.
    assert boss.delete("/api/v1/people/manager/roles/manager").status_code == 200
    assert boss.get("/api/v1/people/manager").json()["roles"] == []
    demoted = boss.delete("/api/v1/people/boss/roles/manager")
    assert demoted.status_code == 409
    assert "the site must keep someone who can run it" in demoted.json()["detail"]
    closed = boss.post("/api/v1/people/boss/close")
    assert closed.status_code == 409
    assert [r["role"] for r in boss.get("/api/v1/people/boss").json()["roles"]] == ["manager"]
    # With a second manager, the first may step down.
    add_person(site.server, "deputy", Role.MANAGER)
    stepped = boss.delete("/api/v1/people/boss/roles/manager")
    assert stepped.status_code == 200
    assert stepped.json()["roles"] == []
    assert entries(site.server, "role.revoked")[-1] == (
        "role.revoked",
        {"person": "boss", "role": "manager", "by": "boss"},
    )
    # Demoted, the old token no longer opens people routes.
    assert boss.get("/api/v1/people").status_code == 401


def test_closing_an_account_ends_its_access(site: Served, boss: TestClient) -> None:
    add_person(site.server, "leaver", Role.STAFF)
    theirs = client_as(site.server, "leaver")
    assert theirs.post("/api/v1/me/test-page").status_code == 409  # signed in: no phone
    answer = boss.post("/api/v1/people/leaver/close")
    assert answer.status_code == 200
    assert answer.json()["closed"] is True
    assert theirs.post("/api/v1/me/test-page").status_code == 401
    assert {p["id"]: p["closed"] for p in boss.get("/api/v1/people").json()} == {
        "boss": False,
        "leaver": True,
        "floor": False,  # the site's staff, imported at start
        "manager": False,
        "reception": False,
    }
    assert ("person.closed", {"person": "leaver", "by": "boss"}) in entries(site.server)


def test_changing_a_phone_resets_its_confirmation(site: Served, boss: TestClient) -> None:
    add_person(site.server, "floor", Role.STAFF, phone="+32470000002", confirmed=True)
    assert boss.get("/api/v1/people/floor").json()["phone_confirmed"] is True
    changed = boss.patch("/api/v1/people/floor", json={"phone": "+32470999888"})
    assert changed.status_code == 200
    assert (changed.json()["phone"], changed.json()["phone_confirmed"]) == (
        "+32 4** ** ** 88",
        False,
    )
    assert entries(site.server, "person.changed")[-1] == (
        "person.changed",
        {"person": "floor", "by": "boss", "fields": ["phone"]},
    )


def test_bad_input_is_refused_with_what_to_do(site: Served, boss: TestClient) -> None:
    not_e164 = boss.post("/api/v1/people", json={**NEW, "phone": "0470 11 12 22"})
    assert not_e164.status_code == 422
    assert "E.164" in not_e164.json()["detail"]
    a_name = boss.post("/api/v1/people", json={**NEW, "id": "Ann Peeters"})
    assert a_name.status_code == 422
    assert "not a name" in a_name.json()["detail"]
    assert boss.post("/api/v1/people", json=NEW).status_code == 201
    taken = boss.post("/api/v1/people", json=NEW)
    assert taken.status_code == 422
    assert "taken" in taken.json()["detail"]
    assert boss.get("/api/v1/people/nobody").status_code == 404
    assert boss.delete("/api/v1/people/night-staff/roles/installer").status_code == 404


def test_a_new_link_replaces_the_unused_one(site: Served, boss: TestClient) -> None:
    assert boss.post("/api/v1/people", json=NEW).status_code == 201
    answer = boss.post("/api/v1/people/night-staff/links", json={"purpose": "enrol"})
    assert answer.status_code == 201
    assert answer.json()["link"].startswith(f"{BASE_URL}/enrol/")
    now = site.clock.now()
    with site.server.services.sessions() as s:
        good = [
            link
            for link in s.query(EnrolmentLink).filter(EnrolmentLink.person_id == "night-staff")
            if link.expires_at > now
        ]
    assert len(good) == 1
    recover = boss.post("/api/v1/people/night-staff/links", json={"purpose": "recover"})
    assert recover.status_code == 201
    wrong = boss.post("/api/v1/people/night-staff/links", json={"purpose": "admin"})
    assert wrong.status_code == 422


def test_links_go_only_from_a_browser_and_never_to_oneself(site: Served, boss: TestClient) -> None:
    token = client_as(site.server, "boss")
    by_token = token.post("/api/v1/people", json=NEW)
    assert by_token.status_code == 403
    assert "only from a signed-in browser, not with an API token" in by_token.json()["detail"]
    assert boss.post("/api/v1/people", json=NEW).status_code == 201
    link = token.post("/api/v1/people/night-staff/links", json={"purpose": "recover"})
    assert link.status_code == 403
    assert "only from a signed-in browser, not with an API token" in link.json()["detail"]
    own = boss.post("/api/v1/people/boss/links", json={"purpose": "recover"})
    assert own.status_code == 403
    assert "cannot send yourself a sign-in link" in own.json()["detail"]
    issued = [d for _, d in entries(site.server, "signin.link_issued")]
    assert [d["person"] for d in issued] == ["night-staff"]


def test_an_enrol_link_for_someone_who_can_sign_in_is_refused(
    site: Served, boss: TestClient
) -> None:
    assert boss.post("/api/v1/people", json=NEW).status_code == 201
    with site.server.services.sessions.begin() as s:
        set_password(
            s,
            person_id="night-staff",
            password="violet harbour tractor minnow",
            now=site.clock.now(),
        )
    enrol = boss.post("/api/v1/people/night-staff/links", json={"purpose": "enrol"})
    assert enrol.status_code == 409
    assert enrol.json()["detail"] == "they can sign in already: send a recovery link"
    assert (
        boss.post("/api/v1/people/night-staff/links", json={"purpose": "recover"}).status_code
        == 201
    )


def test_a_manager_role_that_ends_is_not_another_manager(site: Served, boss: TestClient) -> None:
    assert boss.delete("/api/v1/people/manager/roles/manager").status_code == 200
    add_person(site.server, "temp")
    until = (site.clock.now() + timedelta(days=10)).isoformat()
    granted = boss.post("/api/v1/people/temp/roles", json={"role": "manager", "until": until})
    assert granted.status_code == 200, granted.text
    demoted = boss.delete("/api/v1/people/boss/roles/manager")
    assert demoted.status_code == 409
    assert "leave no manager" in demoted.json()["detail"]
    assert boss.post("/api/v1/people/boss/close").status_code == 409
    add_person(site.server, "deputy", Role.MANAGER)
    assert boss.delete("/api/v1/people/boss/roles/manager").status_code == 200
