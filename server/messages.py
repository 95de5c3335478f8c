"""What staff read: SMS texts in French, Dutch and English.

Every page names the room and the time (site time zone) and says how to
acknowledge. Texts stay within one GSM-7 segment where the room label allows.
"""

from __future__ import annotations

from datetime import datetime
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from server.site import Language

_PAGE = {
    "fr": "ALERTE {room} à {time}. Répondez {code} si vous y allez.",
    "nl": "ALARM {room} om {time}. Antwoord {code} als u gaat.",
    "en": "ALARM {room} at {time}. Reply {code} if you are going.",
}
_PAGE_TEST = {
    "fr": "TEST {room} à {time} (pas une vraie alerte). Aucune réponse nécessaire.",
    "nl": "TEST {room} om {time} (geen echt alarm). Geen antwoord nodig.",
    "en": "TEST {room} at {time} (not a real alarm). No reply needed.",
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
    "Le bouton ne peut pas alerter. Répondez {code} si vous vous en occupez.",
    "nl": "STORING: het toestel in {room} antwoordt niet meer sinds {time}. "
    "De knop kan niet alarmeren. Antwoord {code} als u het opvolgt.",
    "en": "FAULT: the unit in {room} is offline since {time}. Its button cannot alert. "
    "Reply {code} if you are dealing with it.",
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


def unit_offline(lang: Language, *, room: str, since: datetime, timezone: str, code: int) -> str:
    return _UNIT_OFFLINE[lang].format(room=room, time=local_time(since, timezone), code=code)


def unit_online(lang: Language, *, room: str) -> str:
    return _UNIT_ONLINE[lang].format(room=room)


_FOLLOW_UP = {
    "fr": "TOUJOURS OUVERT: {room}, pris en charge par {name} à {time}. Répondez {code}g "
    "(réglé) ou {code}f (fausse alerte) pour clore.",
    "nl": "NOG OPEN: {room}, opgenomen door {name} om {time}. Antwoord {code}g (afgehandeld) "
    "of {code}f (vals alarm) om af te sluiten.",
    "en": "STILL OPEN: {room}, taken by {name} at {time}. Reply {code}g (handled) or "
    "{code}f (false alarm) to close.",
}
_CLOSED = {
    "fr": "{room} est clos.",
    "nl": "{room} is afgesloten.",
    "en": "{room} is closed.",
}
_CALL = {
    "fr": "Alerte. {room}. Appuyez sur 1 si vous y allez.",
    "nl": "Alarm. {room}. Druk op 1 als u gaat.",
    "en": "Alarm. {room}. Press 1 if you are going.",
}
_CALL_FOLLOW_UP = {
    "fr": "{room} est toujours ouvert. Appuyez sur 1 si vous y allez.",
    "nl": "{room} is nog open. Druk op 1 als u gaat.",
    "en": "{room} is still open. Press 1 if you are going.",
}
_CALL_THANKS = {
    "fr": "Merci. Vous allez à {room}. Les autres sont prévenus.",
    "nl": "Bedankt. U gaat naar {room}. De anderen zijn verwittigd.",
    "en": "Thank you. You are going to {room}. The others have been told.",
}
_CALL_NONE = {
    "fr": "Aucune réponse enregistrée.",
    "nl": "Geen antwoord ontvangen.",
    "en": "No answer recorded.",
}
_DUTY_ON = {
    "fr": "Vous êtes de garde jusqu'à {time}. Répondez DUTY OFF pour arrêter.",
    "nl": "U hebt dienst tot {time}. Antwoord DUTY OFF om te stoppen.",
    "en": "You are on duty until {time}. Reply DUTY OFF to stop.",
}
_DUTY_OFF = {
    "fr": "Votre prise de garde est terminée.",
    "nl": "Uw overname is beëindigd.",
    "en": "Your take-over has ended.",
}
_OPTED_OUT = {
    "fr": "{name}, de garde, a bloqué les SMS (STOP). Seuls les appels l'atteignent; "
    "demandez-lui d'envoyer START.",
    "nl": "{name}, met dienst, heeft sms geblokkeerd (STOP). Alleen oproepen bereiken hem of "
    "haar; vraag START te sturen.",
    "en": "{name}, on duty, has blocked SMS (STOP). Only calls reach them now; ask them to "
    "send START.",
}
_GAP = {
    "fr": "Personne n'est de garde de {start} à {end}. Le groupe par défaut (ou tout le "
    "personnel) sera alerté.",
    "nl": "Niemand heeft dienst van {start} tot {end}. De standaardgroep (of al het personeel) "
    "wordt gealarmeerd.",
    "en": "Nobody is on duty from {start} to {end}. The default group (or else all staff) "
    "will be paged.",
}
_UNTIL_FURTHER = {"fr": "nouvel ordre", "nl": "nader order", "en": "further notice"}
#: Twilio <Say> voices by staff language.
VOICE = {"fr": "fr-FR", "nl": "nl-BE", "en": "en-GB"}


def follow_up(
    lang: Language, *, room: str, name: str, at: datetime, timezone: str, code: int
) -> str:
    return _FOLLOW_UP[lang].format(room=room, name=name, time=local_time(at, timezone), code=code)


def closed(lang: Language, *, room: str) -> str:
    return _CLOSED[lang].format(room=room)


def call_twiml(lang: Language, *, room: str, gather_url: str, follow: bool) -> str:
    """The voice call: the room, then "press 1", twice; a key press goes to ``gather_url``."""
    text = escape((_CALL_FOLLOW_UP if follow else _CALL)[lang].format(room=room))
    say = f'<Say language="{VOICE[lang]}">{text}</Say>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Gather numDigits="1" action="{escape(gather_url)}" method="POST" timeout="8">'
        f'{say}<Pause length="1"/>{say}</Gather>'
        f'<Say language="{VOICE[lang]}">{_CALL_NONE[lang]}</Say></Response>'
    )


def call_answer(lang: Language, text: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Say language="{VOICE[lang]}">{escape(text)}</Say><Hangup/></Response>'
    )


def call_thanks(lang: Language, *, room: str) -> str:
    return _CALL_THANKS[lang].format(room=room)


def call_nothing(lang: Language) -> str:
    return _CALL_NONE[lang]


def duty_on(lang: Language, *, until: datetime, timezone: str) -> str:
    return _DUTY_ON[lang].format(time=local_time(until, timezone))


def duty_off(lang: Language) -> str:
    return _DUTY_OFF[lang]


def opted_out(lang: Language, *, name: str) -> str:
    return _OPTED_OUT[lang].format(name=name)


def gap(lang: Language, *, start: datetime, end: datetime | None, timezone: str) -> str:
    until = local_time(end, timezone) if end else _UNTIL_FURTHER[lang]
    return _GAP[lang].format(start=local_time(start, timezone), end=until)


_SERVER_LINK_LOST = {
    "fr": "PANNE: le serveur ne reçoit plus le courtier MQTT depuis {time}. Les boutons "
    "ne l'atteignent que par leur second chemin (HTTPS), s'il est configuré.",
    "nl": "STORING: de server ontvangt de MQTT-broker niet meer sinds {time}. Knoppen bereiken "
    "hem enkel via hun tweede pad (HTTPS), als dat ingesteld is.",
    "en": "FAULT: the server has lost the MQTT broker since {time}. Buttons reach it only over "
    "their second path (HTTPS), where it is set up.",
}
_SERVER_LINK_BACK = {
    "fr": "Le serveur reçoit de nouveau le courtier MQTT.",
    "nl": "De server ontvangt de MQTT-broker opnieuw.",
    "en": "The server is connected to the MQTT broker again.",
}


_LOG_FAILED = {
    "fr": "PANNE: le journal des incidents a échoué à sa vérification (modifié, ou base "
    "restaurée d'une sauvegarde plus ancienne). Les alarmes fonctionnent. Voir le journal "
    "du serveur; gardez le fichier des checkpoints. Rien n'est plus signé. Répété toutes les "
    "heures jusqu'à confirmation: panicbutton audit acknowledge-failure.",
    "nl": "STORING: het incidentenlogboek faalde bij zijn controle (gewijzigd, of database "
    "hersteld uit een oudere back-up). Alarmen werken. Zie het serverlogboek; bewaar het "
    "checkpointbestand. Er wordt niets meer ondertekend. Elk uur herhaald tot bevestiging: "
    "panicbutton audit acknowledge-failure.",
    "en": "FAULT: the incident log failed its check (changed, or the database restored from "
    "an older backup). Alarms still work. See the server's log; keep the checkpoint file. "
    "Nothing more is signed. Repeated hourly until acknowledged: "
    "panicbutton audit acknowledge-failure.",
}


def log_failed(lang: Language) -> str:
    return _LOG_FAILED[lang]


def server_link_lost(lang: Language, *, since: datetime, timezone: str) -> str:
    return _SERVER_LINK_LOST[lang].format(time=local_time(since, timezone))


def server_link_back(lang: Language) -> str:
    return _SERVER_LINK_BACK[lang]
