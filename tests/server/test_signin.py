"""Sign-in through the pages, as a browser does: enrolment links, passkeys (a software
authenticator), passwords with TOTP, throttling, sessions and CSRF."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyotp
from argon2 import PasswordHasher
from sqlalchemy import select

from panicbutton.redact import redact
from server.people.roles import Role
from server.people.signin import ThrottledError, WrongCredentialsError
from server.people.tables import Password, SignInFailure
from tests.fakes.authenticator import Authenticator
from tests.server.signin_kit import (
    BASE,
    GOOD_PASSWORD,
    browser,
    clock,
    enrol_passkey,
    enrol_password,
    events,
    form_csrf,
    invite,
    passkey_options,
    running,
    sign_in_passkey,
    sign_in_password,
    totp_secret_of,
)


def test_passkey_enrolment_then_sign_in(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        link = invite(server, "first-manager", Role.MANAGER)
        key = Authenticator(origin=BASE)
        phone = browser(server)
        enrolled = enrol_passkey(phone, link, key)
        assert enrolled.status_code == 200, enrolled.text
        assert phone.get("/api/v1/me").json()["roles"] == ["manager"]

        other = browser(server)
        signed = sign_in_passkey(other, key)
        assert signed.status_code == 200, signed.text
        me = other.get("/api/v1/me").json()
        assert me["id"] == "first-manager"
        assert "people" in me["rights"]
        assert "first-manager" in other.get("/account").text
        assert events(server, "signin.method_added") == [
            {"person": "first-manager", "method": "passkey"}
        ]
        assert events(server, "signin.link_issued")[0]["purpose"] == "enrol"


def test_replayed_assertion_is_refused(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        key = Authenticator(origin=BASE)
        assert enrol_passkey(browser(server), invite(server, "s1"), key).status_code == 200
        client = browser(server)
        csrf, options = passkey_options(client)
        assertion = key.get(options)
        first = client.post(
            "/sign-in/passkey", json={"credential": assertion}, headers={"X-CSRF-Token": csrf}
        )
        assert first.status_code == 200
        again = browser(server)
        csrf2 = form_csrf(again.get("/sign-in").text)
        replay = again.post(
            "/sign-in/passkey", json={"credential": assertion}, headers={"X-CSRF-Token": csrf2}
        )
        assert replay.status_code == 401
        assert "already used" in replay.json()["detail"]
        assert again.get("/api/v1/me").status_code == 401


def test_challenge_expires_after_two_minutes(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        key = Authenticator(origin=BASE)
        enrol_passkey(browser(server), invite(server, "s1"), key)
        client = browser(server)
        csrf, options = passkey_options(client)
        clock(server).advance(121)
        late = client.post(
            "/sign-in/passkey",
            json={"credential": key.get(options)},
            headers={"X-CSRF-Token": csrf},
        )
        assert late.status_code == 401
        assert "too late" in late.json()["detail"]


def test_wrong_origin_is_refused(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        key = Authenticator(origin=BASE)
        evil = enrol_passkey(browser(server), invite(server, "s1"), key, origin="https://evil.test")
        assert evil.status_code == 422
        assert "origin" in evil.json()["detail"].lower()
        # The link is still unused: the genuine page can finish.
        link = invite(server, "s2")
        assert enrol_passkey(browser(server), link, key).status_code == 200
        phished = sign_in_passkey(browser(server), key, origin="https://evil.test")
        assert phished.status_code == 401


def test_cloned_authenticator_counter_going_back_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        key = Authenticator(origin=BASE)
        enrol_passkey(browser(server), invite(server, "s1"), key)
        assert sign_in_passkey(browser(server), key, counter=5).status_code == 200
        clone = sign_in_passkey(browser(server), key, counter=3)
        assert clone.status_code == 401
        assert "sign count" in clone.json()["detail"]


def test_password_is_argon2id_with_owasp_parameters(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        done = enrol_password(browser(server), invite(server, "s1"))
        assert done.status_code == 303
        with server.services.sessions() as s:
            stored = s.scalars(select(Password.hash)).one()
        assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert GOOD_PASSWORD not in stored
        assert sign_in_password(browser(server), "s1").status_code == 303


def test_weak_passwords_are_refused_with_the_reason(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        link = invite(server, "s1")
        client = browser(server)
        short = enrol_password(client, link, password="tiny pass")
        assert short.status_code == 422
        assert "at least 12 characters" in short.text
        common = enrol_password(client, link, password="passwordpassword")
        assert common.status_code == 422
        assert "repeated pattern" in common.text
        assert enrol_password(client, link).status_code == 303


def test_totp_turned_on_and_a_code_is_accepted_once(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        link = invite(server, "s1")
        client = browser(server)
        csrf, secret = totp_secret_of(client, link)
        now = clock(server).now()
        code = pyotp.TOTP(secret).at(now)
        done = client.post(
            f"{link}/password",
            data={
                "csrf": csrf,
                "password": GOOD_PASSWORD,
                "totp_secret": secret,
                "totp_code": code,
            },
            follow_redirects=False,
        )
        assert done.status_code == 303
        assert [e["method"] for e in events(server, "signin.method_added")] == ["password", "totp"]
        # The code that turned it on cannot sign in; nor can a missing code.
        assert sign_in_password(browser(server), "s1", code=code).status_code == 401
        assert sign_in_password(browser(server), "s1").status_code == 401
        clock(server).advance(30)
        fresh = pyotp.TOTP(secret).at(clock(server).now())
        assert sign_in_password(browser(server), "s1", code=fresh).status_code == 303
        reused = sign_in_password(browser(server), "s1", code=fresh)
        assert reused.status_code == 401
        assert "wrong id, password or code" in reused.text


def test_wrong_passwords_throttle_the_account(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        for _ in range(5):
            assert sign_in_password(browser(server), "s1", "wrong horse battery").status_code == 401
        blocked = sign_in_password(browser(server), "s1")  # even the right password
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) > 0
        assert "too many failed sign-ins for this account" in blocked.text
        clock(server).advance(15 * 60 + 1)
        assert sign_in_password(browser(server), "s1").status_code == 303


def test_unknown_account_and_wrong_password_answer_alike(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        wrong = sign_in_password(browser(server), "s1", "wrong horse battery")
        unknown = sign_in_password(browser(server), "nobody", "wrong horse battery")
        assert wrong.status_code == unknown.status_code == 401
        said = [re.search(r'id="problem">([^<]*)<', a.text) for a in (wrong, unknown)]
        assert said[0]
        assert said[1]
        assert said[0].group(1) == said[1].group(1)


def test_per_address_throttle_trusts_forwarded_for_only_from_proxies(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path, trusted_proxies=["10.0.0.0/8"]) as server:
        # From an untrusted peer, X-Forwarded-For is ignored: one address, 20 failures.
        for n in range(20):
            answer = sign_in_password(
                browser(server, address="192.0.2.7"),
                f"user-{n}",
                "wrong horse battery",
                **{"X-Forwarded-For": f"198.51.100.{n}"},
            )
            assert answer.status_code == 401
        blocked = sign_in_password(
            browser(server, address="192.0.2.7"),
            "user-x",
            "wrong horse battery",
            **{"X-Forwarded-For": "198.51.100.99"},
        )
        assert blocked.status_code == 429
        assert "your address" in blocked.text
        # Behind the trusted proxy, each forwarded caller is counted apart.
        for n in range(21):
            answer = sign_in_password(
                browser(server, address="10.0.0.5"),
                f"other-{n}",
                "wrong horse battery",
                **{"X-Forwarded-For": f"203.0.113.{n}"},
            )
            assert answer.status_code == 401
        for n in range(20):
            sign_in_password(
                browser(server, address="10.0.0.5"),
                f"same-{n}",
                "wrong horse battery",
                **{"X-Forwarded-For": "203.0.113.200, 203.0.113.201"},
            )
        assert (
            sign_in_password(
                browser(server, address="10.0.0.5"),
                "again",
                "wrong horse battery",
                **{"X-Forwarded-For": "203.0.113.201"},
            ).status_code
            == 429
        )


def test_expired_and_used_links_answer_410(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        link = invite(server, "s1", hours=1)
        clock(server).advance(3601)
        expired = browser(server).get(link)
        assert expired.status_code == 410
        assert "ask a manager for a new one" in expired.text
        link = invite(server, "s1")
        client = browser(server)
        assert enrol_password(client, link).status_code == 303
        assert client.get(link).status_code == 410
        assert browser(server).get("/enrol/not-a-real-token").status_code == 410


def test_recovery_link_ends_every_session_first(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        old = browser(server)
        assert enrol_password(old, invite(server, "s1")).status_code == 303
        assert old.get("/api/v1/me").status_code == 200
        fresh = browser(server)
        recovered = enrol_password(
            fresh, invite(server, "s1", purpose="recover"), password="quiet lantern orchard 7"
        )
        assert recovered.status_code == 303
        assert old.get("/api/v1/me").status_code == 401
        assert fresh.get("/api/v1/me").status_code == 200
        assert events(server, "signin.sessions_ended") == [{"person": "s1", "by": "s1", "count": 1}]


def test_session_cookie_is_httponly_secure_strict(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        answer = sign_in_password(browser(server), "s1")
        assert answer.status_code == 303
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("__Host-pb_session=")
        )
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes


def test_cookie_replayed_after_sign_out_is_refused(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        client = browser(server)
        sign_in_password(client, "s1")
        stolen = client.cookies.get("__Host-pb_session")
        assert stolen
        csrf = form_csrf(client.get("/account").text)
        out = client.post("/sign-out", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        thief = browser(server)
        thief.cookies.set("__Host-pb_session", stolen)
        assert thief.get("/api/v1/me").status_code == 401


def test_cookie_from_another_browser_is_refused_and_ended(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        client = browser(server)
        sign_in_password(client, "s1")
        stolen = client.cookies.get("__Host-pb_session")
        assert stolen
        thief = browser(server, agent="curl/8.0")
        thief.cookies.set("__Host-pb_session", stolen)
        assert thief.get("/api/v1/me").status_code == 401
        assert client.get("/api/v1/me").status_code == 401  # ended for its owner too


def test_session_post_needs_the_csrf_header(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        client = browser(server)
        sign_in_password(client, "s1")
        refused = client.post("/api/v1/me/sessions/end")
        assert refused.status_code == 403
        assert "X-CSRF-Token" in refused.json()["detail"]
        csrf = form_csrf(client.get("/account").text)
        bad = client.post("/sign-out", data={"csrf": "forged"}, follow_redirects=False)
        assert bad.status_code == 403
        ended = client.post("/api/v1/me/sessions/end", headers={"X-CSRF-Token": csrf})
        assert ended.status_code == 200
        assert ended.json() == {"ended": 2}  # the enrolment signed in too
        assert client.get("/api/v1/me").status_code == 401
        assert events(server, "signin.sessions_ended")[-1] == {
            "person": "s1",
            "by": "s1",
            "count": 2,
        }


def test_sign_in_forms_need_the_pre_session_token(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        client = browser(server)
        client.get("/sign-in")
        forged = client.post(
            "/sign-in/password",
            data={"csrf": "from-another-site", "id": "s1", "password": GOOD_PASSWORD},
            follow_redirects=False,
        )
        assert forged.status_code == 403
        no_cookie = browser(server).post(
            "/sign-in/passkey/options", headers={"X-CSRF-Token": "anything"}
        )
        assert no_cookie.status_code == 403


def test_signed_in_person_adds_a_passkey_and_turns_totp_on(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        client = browser(server)
        assert enrol_password(client, invite(server, "s1")).status_code == 303
        csrf = {"X-CSRF-Token": form_csrf(client.get("/account").text)}
        options = client.post("/api/v1/me/passkey-options", headers=csrf)
        assert options.status_code == 200
        key = Authenticator(origin=BASE)
        added = client.post(
            "/api/v1/me/passkeys",
            json={"credential": key.create(options.json()), "label": "laptop"},
            headers=csrf,
        )
        assert added.status_code == 201, added.text
        assert [p["label"] for p in client.get("/api/v1/me/passkeys").json()] == ["laptop"]
        assert sign_in_passkey(browser(server), key).status_code == 200

        seed = client.get("/api/v1/me/totp-seed").json()
        code = pyotp.TOTP(seed["secret"]).at(clock(server).now())
        changed = client.put(
            "/api/v1/me/password",
            json={
                "current_password": GOOD_PASSWORD,
                "password": "amber kettle ferry 12",
                "totp_secret": seed["secret"],
                "totp_code": code,
            },
            headers=csrf,
        )
        assert changed.status_code == 204, changed.text
        clock(server).advance(30)
        fresh = pyotp.TOTP(seed["secret"]).at(clock(server).now())
        assert (
            sign_in_password(browser(server), "s1", "amber kettle ferry 12", fresh).status_code
            == 303
        )
        clock(server).advance(30)
        weak = client.put(
            "/api/v1/me/password",
            json={
                "current_password": "amber kettle ferry 12",
                "current_code": pyotp.TOTP(seed["secret"]).at(clock(server).now()),
                "password": "short",
            },
            headers=csrf,
        )
        assert weak.status_code == 422
        assert "too short" in weak.json()["detail"]

        key_id = added.json()["id"]
        removed = client.delete(f"/api/v1/me/passkeys/{key_id}", headers=csrf)
        assert removed.status_code == 204
        assert events(server, "signin.method_removed") == [
            {"person": "s1", "method": "passkey", "by": "s1"}
        ]


def test_the_only_way_to_sign_in_cannot_be_removed(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        client = browser(server)
        key = Authenticator(origin=BASE)
        assert enrol_passkey(client, invite(server, "s1"), key).status_code == 200
        csrf = {"X-CSRF-Token": form_csrf(client.get("/account").text)}
        key_id = client.get("/api/v1/me/passkeys").json()[0]["id"]
        refused = client.delete(f"/api/v1/me/passkeys/{key_id}", headers=csrf)
        assert refused.status_code == 422
        assert "only way to sign in" in refused.json()["detail"]


def test_old_hash_parameters_are_upgraded_at_sign_in(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        weaker = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
        with server.services.sessions.begin() as s:
            s.scalars(select(Password)).one().hash = weaker.hash(GOOD_PASSWORD)
        assert sign_in_password(browser(server), "s1").status_code == 303
        with server.services.sessions() as s:
            assert (
                s.scalars(select(Password.hash)).one().startswith("$argon2id$v=19$m=19456,t=2,p=1$")
            )


def test_enrolment_link_token_never_reaches_the_logs() -> None:
    line = '"POST /enrol/AbCdEf_123456789012345678901234567890abcdefg/password HTTP/1.1" 303'
    assert redact(line) == '"POST /enrol/[redacted] HTTP/1.1" 303'


BROWSER_ONLY = "only from a signed-in browser, not with an API token"


def test_an_api_token_cannot_take_the_account_over(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        owner = browser(server)
        assert enrol_password(owner, invite(server, "s1")).status_code == 303
        csrf = {"X-CSRF-Token": form_csrf(owner.get("/account").text)}
        made = owner.post("/api/v1/me/tokens", json={"scopes": ["self"]}, headers=csrf)
        assert made.status_code == 201, made.text
        stolen = browser(server)
        stolen.headers["Authorization"] = f"Bearer {made.json()['token']}"
        assert stolen.get("/api/v1/me").status_code == 200  # it still reads the account
        tries = [
            stolen.put("/api/v1/me/password", json={"password": "attacker owns this 99"}),
            stolen.post("/api/v1/me/passkey-options"),
            stolen.post(
                "/api/v1/me/passkeys",
                json={"credential": {"id": "a-key", "response": {}}},
            ),
            stolen.post("/api/v1/me/tokens", json={"scopes": ["self"], "days": 365}),
            stolen.delete(f"/api/v1/me/tokens/{made.json()['id']}"),
            stolen.delete("/api/v1/me/passkeys/some-key"),
            stolen.get("/api/v1/me/totp-seed"),
        ]
        for answer in tries:
            assert answer.status_code == 403, (answer.request.url, answer.text)
            assert BROWSER_ONLY in answer.json()["detail"]
        assert sign_in_password(browser(server), "s1").status_code == 303
        assert len(events(server, "token.created")) == 1


def test_changing_the_password_needs_the_current_one_and_ends_other_sessions(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        link = invite(server, "s1")
        client = browser(server)
        csrf_form, secret = totp_secret_of(client, link)
        code = pyotp.TOTP(secret).at(clock(server).now())
        client.post(
            f"{link}/password",
            data={
                "csrf": csrf_form,
                "password": GOOD_PASSWORD,
                "totp_secret": secret,
                "totp_code": code,
            },
            follow_redirects=False,
        )
        csrf = {"X-CSRF-Token": form_csrf(client.get("/account").text)}
        other = browser(server)
        clock(server).advance(30)
        now_code = pyotp.TOTP(secret).at(clock(server).now())
        assert sign_in_password(other, "s1", code=now_code).status_code == 303
        new = "amber kettle ferry 12"
        clock(server).advance(30)
        no_current = client.put("/api/v1/me/password", json={"password": new}, headers=csrf)
        assert no_current.status_code == 403
        assert "current password or code is wrong" in no_current.json()["detail"]
        no_code = client.put(
            "/api/v1/me/password",
            json={"password": new, "current_password": GOOD_PASSWORD},
            headers=csrf,
        )
        assert no_code.status_code == 403
        done = client.put(
            "/api/v1/me/password",
            json={
                "password": new,
                "current_password": GOOD_PASSWORD,
                "current_code": pyotp.TOTP(secret).at(clock(server).now()),
            },
            headers=csrf,
        )
        assert done.status_code == 204, done.text
        assert other.get("/api/v1/me").status_code == 401  # the other session ended
        assert client.get("/api/v1/me").status_code == 200  # this one goes on
        assert events(server, "signin.sessions_ended")[-1] == {
            "person": "s1",
            "by": "s1",
            "count": 1,
        }
        # TOTP stayed on: a password alone is not enough, nor was it turned off silently.
        assert sign_in_password(browser(server), "s1", new).status_code == 401
        assert events(server, "signin.method_removed") == []
        clock(server).advance(30)
        off = client.put(
            "/api/v1/me/password",
            json={
                "password": new,
                "current_password": new,
                "current_code": pyotp.TOTP(secret).at(clock(server).now()),
                "totp_off": True,
            },
            headers=csrf,
        )
        assert off.status_code == 204, off.text
        assert events(server, "signin.method_removed") == [
            {"person": "s1", "method": "totp", "by": "s1"}
        ]
        assert sign_in_password(browser(server), "s1", new).status_code == 303


def test_a_recovery_link_takes_away_every_way_in(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        owner = browser(server)
        key = Authenticator(origin=BASE)
        assert enrol_passkey(owner, invite(server, "s1"), key).status_code == 200
        csrf = {"X-CSRF-Token": form_csrf(owner.get("/account").text)}
        token = owner.post("/api/v1/me/tokens", json={"scopes": ["self"]}, headers=csrf).json()
        assert (
            owner.put(
                "/api/v1/me/password", json={"password": "attacker owns this 99"}, headers=csrf
            ).status_code
            == 204
        )
        fresh = browser(server)
        recovered = enrol_password(fresh, invite(server, "s1", purpose="recover"))
        assert recovered.status_code == 303
        api = browser(server)
        api.headers["Authorization"] = f"Bearer {token['token']}"
        assert api.get("/api/v1/me").status_code == 401
        assert owner.get("/api/v1/me").status_code == 401
        assert sign_in_passkey(browser(server), key).status_code == 401
        assert sign_in_password(browser(server), "s1", "attacker owns this 99").status_code == 401
        assert sign_in_password(browser(server), "s1").status_code == 303
        assert events(server, "token.revoked") == [
            {"person": "s1", "token": token["id"], "by": "s1"}
        ]
        assert events(server, "signin.method_removed") == [
            {"person": "s1", "method": "passkey", "by": "s1"},
            {"person": "s1", "method": "password", "by": "s1"},
        ]
        assert events(server, "signin.sessions_ended")[-1]["count"] == 1


def test_concurrent_wrong_guesses_do_not_pass_the_limit(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        signin = server.services.signin
        start = threading.Barrier(12)

        def guess() -> str:
            start.wait()
            try:
                signin.with_password(
                    person_id="s1",
                    password="wrong horse battery",
                    code="",
                    address="192.0.2.66",
                    agent="x",
                )
            except ThrottledError:
                return "throttled"
            except WrongCredentialsError:
                return "checked"
            return "signed in"

        with ThreadPoolExecutor(12) as pool:
            outcomes = list(pool.map(lambda _: guess(), range(12)))
        assert outcomes.count("checked") == 5, outcomes
        assert outcomes.count("throttled") == 7


def test_guesses_from_elsewhere_do_not_lock_the_owner_out(
    database_url: str, tmp_path: Path
) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        for _ in range(5):
            wrong = sign_in_password(browser(server, address="198.51.100.66"), "s1", "wrong one x")
            assert wrong.status_code == 401
        blocked = sign_in_password(browser(server, address="198.51.100.66"), "s1")
        assert blocked.status_code == 429
        assert "for this account from your address" in blocked.text
        assert sign_in_password(browser(server), "s1").status_code == 303
        # An IPv6 caller counts as their /64: another address in it is still blocked.
        for n in range(5):
            sign_in_password(browser(server, address=f"2001:db8:1:2::{n + 1}"), "s1", "wrong x")
        assert (
            sign_in_password(browser(server, address="2001:db8:1:2::99"), "s1").status_code == 429
        )
        assert sign_in_password(browser(server, address="2001:db8:1:3::1"), "s1").status_code == 303
        # From everywhere together, 50 failures close the account for a while.
        now = clock(server).now()
        with server.services.sessions.begin() as s:
            s.add_all(SignInFailure(key="person:s1", at=now) for _ in range(50))
        far = sign_in_password(browser(server, address="203.0.113.9"), "s1")
        assert far.status_code == 429
        assert "too many failed sign-ins for this account:" in far.text


def test_the_caller_behind_two_trusted_proxies_is_the_one_counted(
    database_url: str, tmp_path: Path
) -> None:
    proxies = ["10.0.0.0/8", "172.16.0.0/12"]
    with running(database_url, tmp_path, trusted_proxies=proxies) as server:
        for n in range(20):
            answer = sign_in_password(
                browser(server, address="10.0.0.5"),
                f"user-{n}",
                "wrong horse battery",
                # forged by the caller, the caller, the outer proxy
                **{"X-Forwarded-For": f"203.0.113.{n}, 198.51.100.7, 172.16.0.2"},
            )
            assert answer.status_code == 401
        blocked = sign_in_password(
            browser(server, address="10.0.0.5"),
            "user-x",
            "wrong horse battery",
            **{"X-Forwarded-For": "198.51.100.7, 172.16.0.2"},
        )
        assert blocked.status_code == 429
        assert "your address" in blocked.text
        # Another caller through the same two proxies is not blocked.
        other = sign_in_password(
            browser(server, address="10.0.0.5"),
            "user-y",
            "wrong horse battery",
            **{"X-Forwarded-For": "198.51.100.8, 172.16.0.2"},
        )
        assert other.status_code == 401
        with server.services.sessions() as s:
            keys = set(s.scalars(select(SignInFailure.key)))
        assert "addr:172.16.0.2" not in keys
        assert "addr:198.51.100.7" in keys


def test_sign_out_deletes_the_cookies_as_they_were_set(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        enrol_password(browser(server), invite(server, "s1"))
        client = browser(server)
        sign_in_password(client, "s1")
        csrf = form_csrf(client.get("/account").text)
        out = client.post("/sign-out", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        cookie = next(
            c for c in out.headers.get_list("set-cookie") if c.startswith("__Host-pb_session=")
        )
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite=strict", "path=/", "max-age=0"} <= attributes


def test_a_malformed_passkey_answer_is_a_counted_failure(database_url: str, tmp_path: Path) -> None:
    with running(database_url, tmp_path) as server:
        key = Authenticator(origin=BASE)
        assert enrol_passkey(browser(server), invite(server, "s1"), key).status_code == 200
        client = browser(server, address="192.0.2.77")
        csrf, options = passkey_options(client)
        assertion = key.get(options)
        assertion["response"]["userHandle"] = "a"
        answer = client.post(
            "/sign-in/passkey", json={"credential": assertion}, headers={"X-CSRF-Token": csrf}
        )
        assert answer.status_code == 401
        assert "cannot be read" in answer.json()["detail"]
        with server.services.sessions() as s:
            keys = list(s.scalars(select(SignInFailure.key)))
        assert keys == ["addr:192.0.2.77"]
