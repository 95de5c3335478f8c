"""Passkeys (WebAuthn): the options a browser needs, and the check of what it answers.

The relying party is the site's public host (``PANICBUTTON_PUBLIC_BASE_URL``, or
``PANICBUTTON_WEBAUTHN_RP_ID`` / ``PANICBUTTON_WEBAUTHN_ORIGIN``). Every ceremony
starts with a random challenge kept in ``webauthn_challenges`` for 2 minutes;
the answer names its challenge, which is deleted as it is checked, so an answer
is accepted once, by whichever server instance receives it. User verification
(the phone's PIN or fingerprint) is required; a signature counter that goes
backwards (a cloned authenticator) is refused by :mod:`webauthn`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from server.db import changed
from server.errors import PeopleError
from server.models import Base
from server.people.tables import Passkey

_UNREADABLE = "the passkey's answer cannot be read (it is malformed); try again"
#: How long a browser has to answer a challenge.
CHALLENGE_LIFE = timedelta(minutes=2)


class WebauthnChallenge(Base):
    """A challenge handed to a browser, until it is answered or expires."""

    __tablename__ = "webauthn_challenges"

    #: The challenge, base64url without padding.
    challenge: Mapped[str] = mapped_column(String(100), primary_key=True)
    #: ``register`` or ``authenticate``.
    purpose: Mapped[str] = mapped_column(String(16))
    #: Who registers (None for a sign-in: the answer names the person).
    person_id: Mapped[str | None] = mapped_column(String(63))
    expires_at: Mapped[datetime] = mapped_column(index=True)


@dataclass(frozen=True, slots=True)
class RelyingParty:
    """Who the passkeys are for: the host name (``id``) and the exact origin."""

    id: str
    origin: str
    name: str

    @classmethod
    def of(cls, *, public_base_url: str, rp_id: str, origin: str, name: str) -> RelyingParty:
        parts = urlsplit(public_base_url)
        origin = origin or (f"{parts.scheme}://{parts.netloc}" if parts.netloc else "")
        return cls(id=rp_id or parts.hostname or "", origin=origin, name=name)


def _keep(
    session: Session, challenge: bytes, purpose: str, person_id: str | None, now: datetime
) -> None:
    session.execute(delete(WebauthnChallenge).where(WebauthnChallenge.expires_at <= now))
    session.add(
        WebauthnChallenge(
            challenge=bytes_to_base64url(challenge),
            purpose=purpose,
            person_id=person_id,
            expires_at=now + CHALLENGE_LIFE,
        )
    )


def take_challenge(
    session: Session, credential: dict[str, Any], purpose: str, now: datetime
) -> tuple[bytes, str | None]:
    """The challenge the answer names and who it was for, deleted as it is taken
    (single use; commit before checking the answer, so a refused answer cannot be
    tried again); PeopleError if it is unknown, used or expired."""
    try:
        client_data = json.loads(base64url_to_bytes(credential["response"]["clientDataJSON"]))
        challenge = str(client_data["challenge"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PeopleError("the passkey's answer cannot be read; try again") from None
    row = session.get(WebauthnChallenge, challenge)
    person_id = row.person_id if row is not None else None
    taken = changed(
        session,
        delete(WebauthnChallenge).where(
            WebauthnChallenge.challenge == challenge,
            WebauthnChallenge.purpose == purpose,
            WebauthnChallenge.expires_at > now,
        ),
    )
    if taken != 1:
        raise PeopleError(
            "this passkey answer was already used or came too late (2 minutes); start again"
        )
    return base64url_to_bytes(challenge), person_id


def registration_options(
    session: Session, rp: RelyingParty, *, person_id: str, display: str, now: datetime
) -> str:
    """The options (JSON) for ``navigator.credentials.create``, for a new passkey."""
    existing = session.query(Passkey.id).filter(Passkey.person_id == person_id).all()
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=person_id.encode(),
        user_name=person_id,
        user_display_name=display,
        timeout=int(CHALLENGE_LIFE.total_seconds() * 1000),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(row.id)) for row in existing
        ],
    )
    _keep(session, options.challenge, "register", person_id, now)
    return options_to_json(options)


def register(
    session: Session,
    rp: RelyingParty,
    *,
    person_id: str,
    credential: dict[str, Any],
    challenge: bytes,
    owner: str | None,
    label: str,
    now: datetime,
) -> Passkey:
    """Check a browser's new credential against its challenge (taken by
    :func:`take_challenge`, for ``owner``) and keep it."""
    if owner != person_id:
        raise PeopleError("this passkey answer belongs to another enrolment; start again")
    response = credential.get("response")
    if not isinstance(response, dict):
        raise PeopleError(_UNREADABLE)
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise PeopleError(f"the passkey was refused: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PeopleError(_UNREADABLE) from None
    key_id = bytes_to_base64url(verified.credential_id)
    if session.get(Passkey, key_id) is not None:
        raise PeopleError("this passkey is already registered")
    transports = response.get("transports", [])
    passkey = Passkey(
        id=key_id,
        person_id=person_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        transports=[str(t) for t in transports][:8] if isinstance(transports, list) else [],
        label=label.strip()[:60],
        created_at=now,
        last_used_at=None,
    )
    session.add(passkey)
    return passkey


def authentication_options(session: Session, rp: RelyingParty, *, now: datetime) -> str:
    """The options (JSON) for ``navigator.credentials.get``: any passkey of this site
    (the browser offers the person's own; the answer names them)."""
    options = generate_authentication_options(
        rp_id=rp.id,
        timeout=int(CHALLENGE_LIFE.total_seconds() * 1000),
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    _keep(session, options.challenge, "authenticate", None, now)
    return options_to_json(options)


def authenticate(
    session: Session,
    rp: RelyingParty,
    *,
    credential: dict[str, Any],
    challenge: bytes,
    now: datetime,
) -> Passkey:
    """The passkey that signed this answer to ``challenge`` (taken by
    :func:`take_challenge`); PeopleError if anything is wrong."""
    passkey = session.get(Passkey, str(credential.get("id", ""))[:1400])
    if passkey is None:
        raise PeopleError("this passkey is not registered here; sign in another way")
    response = credential.get("response")
    if not isinstance(response, dict):
        raise PeopleError(_UNREADABLE)
    handle = response.get("userHandle")
    try:
        named = base64url_to_bytes(str(handle)) if handle else None
    except ValueError:
        raise PeopleError(_UNREADABLE) from None
    if named is not None and named != passkey.person_id.encode():
        raise PeopleError("this passkey answer names another person than its key; start again")
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=rp.origin,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except WebAuthnException as exc:
        raise PeopleError(f"the passkey was refused: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PeopleError(_UNREADABLE) from None
    passkey.sign_count = verified.new_sign_count
    passkey.last_used_at = now
    return passkey
