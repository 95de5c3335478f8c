"""What staff read: SMS texts in French, Dutch and English.

Every page names the room and the time (site time zone) and says how to
acknowledge. Texts stay within one GSM-7 segment where the room label allows.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from server.site import Language

_PAGE = {
    "fr": "ALERTE {room} à {time}. Répondez {code} si vous y allez.",
    "nl": "ALARM {room} om {time}. Antwoord {code} als u gaat.",
    "en": "ALARM {room} at {time}. Reply {code} if you are going.",
}
_PAGE_TEST = {
    "fr": "TEST {room} à {time} (pas une vraie alerte). Répondez {code} pour confirmer.",
    "nl": "TEST {room} om {time} (geen echt alarm). Antwoord {code} om te bevestigen.",
    "en": "TEST {room} at {time} (not a real alarm). Reply {code} to confirm.",
}
_CONFIRM = {
    "fr": "Merci. Vous allez à {room}. Les autres sont prévenus.",
    "nl": "Bedankt. U gaat naar {room}. De anderen zijn verwittigd.",
    "en": "Thanks. You are going to {room}. The others have been told.",
}
_STAND_DOWN = {
    "fr": "{name} va à {room}.",
    "nl": "{name} gaat naar {room}.",
    "en": "{name} is going to {room}.",
}
_ALREADY = {
    "fr": "{room}: {name} y va déjà.",
    "nl": "{room}: {name} gaat al.",
    "en": "{room}: {name} is already going.",
}
_REPRESS = {
    "fr": "{room}: le bouton a été pressé à nouveau ({presses} fois).",
    "nl": "{room}: de knop werd opnieuw ingedrukt ({presses} keer).",
    "en": "{room}: the button was pressed again ({presses} times).",
}
_UNIT_OFFLINE = {
    "fr": "PANNE: le boîtier de {room} ne répond plus depuis {time}. "
    "Le bouton ne peut pas alerter.",
    "nl": "STORING: het toestel in {room} antwoordt niet meer sinds {time}. "
    "De knop kan niet alarmeren.",
    "en": "FAULT: the unit in {room} is offline since {time}. Its button cannot alert.",
}
_UNIT_ONLINE = {
    "fr": "Le boîtier de {room} répond de nouveau.",
    "nl": "Het toestel in {room} werkt opnieuw.",
    "en": "The unit in {room} is back online.",
}
_NOT_UNDERSTOOD = {
    "fr": "Non compris. Répondez avec le numéro de l'alerte, par ex. 1.",
    "nl": "Niet begrepen. Antwoord met het nummer van het alarm, bv. 1.",
    "en": "Not understood. Reply with the alert's number, e.g. 1.",
}


def local_time(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%H:%M")


def page(lang: Language, *, room: str, at: datetime, timezone: str, code: int, test: bool) -> str:
    template = (_PAGE_TEST if test else _PAGE)[lang]
    return template.format(room=room, time=local_time(at, timezone), code=code)


def confirm(lang: Language, *, room: str) -> str:
    return _CONFIRM[lang].format(room=room)


def stand_down(lang: Language, *, name: str, room: str) -> str:
    return _STAND_DOWN[lang].format(name=name, room=room)


def already(lang: Language, *, name: str, room: str) -> str:
    return _ALREADY[lang].format(name=name, room=room)


def not_understood(lang: Language) -> str:
    return _NOT_UNDERSTOOD[lang]


def repress(lang: Language, *, room: str, presses: int) -> str:
    return _REPRESS[lang].format(room=room, presses=presses)


def unit_offline(lang: Language, *, room: str, since: datetime, timezone: str) -> str:
    return _UNIT_OFFLINE[lang].format(room=room, time=local_time(since, timezone))


def unit_online(lang: Language, *, room: str) -> str:
    return _UNIT_ONLINE[lang].format(room=room)
