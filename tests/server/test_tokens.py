"""Personal API tokens and the people commands: shown once, stored hashed, scoped,
revocable, expiring; the first manager's link from the command line."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from panicbutton.cli import main
from server.app import Server
from server.people.roles import Role
from server.people.tables import ApiToken
from tests.server.signin_kit import (
    BASE,
    browser,
    clock,
    enrol_password,
    events,
    form_csrf,
    invite,
    running,
)


def signed_in(server: Server, person_id: str, *roles: Role) -> tuple[TestClient, str]:
    """A browser signed in as ``person_id`` and its session's CSRF token."""
    client = browser(server)
    assert enrol_password(client, invite(server, person_id, *roles)).status_code == 303
    return client, form_csrf(client.get("/account").text)


def bearer(server: Server, token: str) -> TestClient:
    return TestClient(server.app, base_url=BASE, headers={"Authorization": f"Bearer {token}"})


def test_token_is_shown_once_works_and_is_revoked(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        client, csrf = signed_in(server, "boss", Role.MANAGER)
        made = client.post(
            "/api/v1/me/tokens",
            json={"scopes": ["records", "self"], "days": 30, "label": "nightly export"},
            headers={"X-CSRF-Token": csrf},
        )
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert token.startswith("pbt_")
        listed = client.get("/api/v1/me/tokens").json()
        assert listed[0]["id"] == made.json()["id"]
        assert listed[0]["scopes"] == ["records", "self"]
        assert "token" not in listed[0]
        assert token.split("_", 2)[2] not in client.get("/api/v1/me/tokens").text
        with server.services.sessions() as s:
            assert token.split("_", 2)[2] not in s.scalars(select(ApiToken.secret_sha256)).one()

        me = bearer(server, token).get("/api/v1/me").json()
        assert me["rights"] == ["records", "self"]  # its scopes, not all the manager's
        assert me["via"] == "token"

        gone = client.delete(
            f"/api/v1/me/tokens/{made.json()['id']}", headers={"X-CSRF-Token": csrf}
        )
        assert gone.status_code == 204
        assert bearer(server, token).get("/api/v1/me").status_code == 401
        assert [e["token"] for e in events(server, "token.created")] == [made.json()["id"]]
        assert events(server, "token.revoked") == [
            {"person": "boss", "token": made.json()["id"], "by": "boss"}
        ]
        again = client.delete(
            f"/api/v1/me/tokens/{made.json()['id']}", headers={"X-CSRF-Token": csrf}
        )
        assert again.status_code == 404


def test_expired_token_is_refused(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        client, csrf = signed_in(server, "s1")
        token = client.post(
            "/api/v1/me/tokens",
            json={"scopes": ["board", "self"], "days": 1},
            headers={"X-CSRF-Token": csrf},
        ).json()["token"]
        assert bearer(server, token).get("/api/v1/me").status_code == 200
        clock(server).advance(24 * 3600 + 1)
        assert bearer(server, token).get("/api/v1/me").status_code == 401


def test_token_cannot_carry_more_than_its_owner(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        client, csrf = signed_in(server, "w-17", Role.WORKER)
        refused = client.post(
            "/api/v1/me/tokens", json={"scopes": ["self", "export"]}, headers={"X-CSRF-Token": csrf}
        )
        assert refused.status_code == 422
        assert "you do not hold export" in refused.json()["detail"]
        unknown = client.post(
            "/api/v1/me/tokens", json={"scopes": ["root"]}, headers={"X-CSRF-Token": csrf}
        )
        assert unknown.status_code == 422
        assert "unknown scope" in unknown.json()["detail"]
        too_long = client.post(
            "/api/v1/me/tokens",
            json={"scopes": ["self"], "days": 400},
            headers={"X-CSRF-Token": csrf},
        )
        assert too_long.status_code == 422
        assert client.get("/api/v1/me/tokens").json() == []


def test_token_needs_a_session_csrf_header(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        client, _ = signed_in(server, "s1")
        assert client.post("/api/v1/me/tokens", json={"scopes": ["self"]}).status_code == 403
        assert (
            browser(server).post("/api/v1/me/tokens", json={"scopes": ["self"]}).status_code == 401
        )


@pytest.fixture
def cli_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANICBUTTON_DEMO", "true")
    monkeypatch.setenv("PANICBUTTON_DATABASE_URL", database_url)
    monkeypatch.setenv("PANICBUTTON_PUBLIC_BASE_URL", BASE)


@pytest.mark.usefixtures("cli_env")
def test_cli_invite_prints_a_link_that_works_once(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["people", "invite", "--id", "first", "--name", "Ann", "--role", "manager"]) == 0
    printed = capsys.readouterr().out
    link = re.search(rf"{re.escape(BASE)}(/enrol/\S+)", printed)
    assert link, printed
    with running(database_url, tmp_path, start=datetime.now(UTC)) as server:
        client = browser(server)
        assert enrol_password(client, link.group(1)).status_code == 303
        assert client.get("/api/v1/me").json()["roles"] == ["manager"]
        assert browser(server).get(link.group(1)).status_code == 410
        assert events(server, "signin.link_issued")[0]["by"] == "system"

    # Someone who can already sign in gets a recovery link (a second one cancels the
    # first); a token for a script.
    assert main(["people", "invite", "--id", "first"]) == 0
    first = re.search(rf"{re.escape(BASE)}(/enrol/\S+)", capsys.readouterr().out)
    assert first
    assert main(["people", "invite", "--id", "first"]) == 0
    assert "/enrol/" in capsys.readouterr().out
    with running(database_url, tmp_path, start=datetime.now(UTC)) as server:
        assert browser(server).get(first.group(1)).status_code == 410
    assert (
        main(
            [
                "people",
                "token",
                "--id",
                "first",
                "--scope",
                "export",
                "--scope",
                "self",
                "--days",
                "7",
            ]
        )
        == 0
    )
    token = re.search(r"pbt_\S+", capsys.readouterr().out)
    assert token
    with running(database_url, tmp_path, start=datetime.now(UTC)) as server:
        assert events(server, "signin.link_issued")[-1]["purpose"] == "recover"
        assert bearer(server, token.group(0)).get("/api/v1/me").json()["rights"] == [
            "export",
            "self",
        ]


@pytest.mark.usefixtures("cli_env")
def test_cli_refuses_with_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["people", "invite", "--id", "Not An Id", "--role", "manager"]) == 2
    assert "lowercase letters" in capsys.readouterr().err
    assert main(["people", "invite", "--id", "x1", "--role", "boss"]) == 2
    assert "role 'boss' is not one of" in capsys.readouterr().err
    assert main(["people", "token", "--id", "nobody", "--scope", "self"]) == 2
    assert "nobody has the id" in capsys.readouterr().err
