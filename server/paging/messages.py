"""What staff read and hear: SMS texts and call words in French, Dutch and English.

(Over 300 lines because it is a table: every text in three languages side by side.)

Every page names the room and the time (site time zone) and says how to
acknowledge. Texts stay within one GSM-7 segment where the room label allows
(links aside). An alarm from a worker's phone names the worker ("<name> (mobile)"
is its room label) and says which kind it is: a press, a duress PIN (a silent
alarm: the worker could not speak freely) or a missed check-out; texts that say
"going to" a room say "going to help" the worker instead (``phone=True``).
"""

from __future__ import annotations

from datetime import datetime
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from server.site import PHONE_PREFIX, Language

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
# NOTE: GSM-7 only (no ç, ê, ô, curly quotes): one SMS segment with a name of about
# 20 characters.
_PAGE_DURESS = {
    "fr": "CONTRAINTE {room} à {time}: alerte silencieuse, code de contrainte au départ. "
    "Ne peut parler librement. Répondez {code} si vous y allez.",
    "nl": "DWANG {room} om {time}: stil alarm, dwangcode ingetikt bij het afmelden. "
    "Kan niet vrijuit spreken. Antwoord {code} als u gaat.",
    "en": "DURESS {room} at {time}: silent alarm, duress PIN used at check-out. "
    "Cannot speak freely. Reply {code} if you are going.",
}
_PAGE_MISSED = {
    "fr": "SANS NOUVELLES {room} à {time}: fin de mission pas confirmée à temps. "
    "Répondez {code} si vous y allez.",
    "nl": "NIET AFGEMELD {room} om {time}: heeft zich niet op tijd afgemeld. "
    "Antwoord {code} als u gaat.",
    "en": "MISSED CHECK-OUT {room} at {time}: did not check out in time. "
    "Reply {code} if you are going.",
}
#: The page by incident kind (the technical kinds have their own texts below).
_PAGES = {
    "panic": _PAGE,
    "test": _PAGE_TEST,
    "duress": _PAGE_DURESS,
    "missed_checkout": _PAGE_MISSED,
}
#: The word before the map link of a phone's alarm (where the worker's phone is).
_MAP = {"fr": "Carte", "nl": "Kaart", "en": "Map"}
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
# A worker's phone is a person somewhere outside, not a place: staff go to help them.
_CONFIRM_PHONE = {
    "fr": "Merci. Vous allez aider {room}. Les autres sont prévenus.",
    "nl": "Bedankt. U gaat {room} helpen. De anderen zijn verwittigd.",
    "en": "Thanks. You are going to help {room}. The others have been told.",
}
_STAND_DOWN_PHONE = {
    "fr": "{name} va aider {room}.",
    "nl": "{name} gaat {room} helpen.",
    "en": "{name} is going to help {room}.",
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
_DUTY_GAP = {
    "fr": "SANS GARDE: des travailleurs sont présents et personne n'est de garde depuis "
    "{time}. Répondez DUTY pour prendre la garde, ou {code} si vous vous en occupez.",
    "nl": "GEEN DIENST: er zijn werknemers aanwezig en niemand heeft dienst sinds {time}. "
    "Antwoord DUTY om de dienst op te nemen, of {code} als u het opvolgt.",
    "en": "NO ONE ON DUTY: workers are present and no reference person is on duty since "
    "{time}. Reply DUTY to take the duty, or {code} if you are dealing with it.",
}
_DUTY_COVERED = {
    "fr": "Quelqu'un est de nouveau de garde (ou plus aucun travailleur n'est présent).",
    "nl": "Er heeft opnieuw iemand dienst (of er zijn geen werknemers meer aanwezig).",
    "en": "Someone is on duty again (or no worker is present any more).",
}
_NOT_UNDERSTOOD = {
    "fr": "Non compris. Répondez avec le code du message d'alerte, par ex. 482.",
    "nl": "Niet begrepen. Antwoord met de code uit het alarmbericht, bv. 482.",
    "en": "Not understood. Reply with the code in the alarm text, e.g. 482.",
}
_CODE_NEEDED = {
    "fr": "Pas fait: votre réponse doit contenir le code de l'alerte: {codes}.",
    "nl": "Niet gedaan: uw antwoord moet de code van het alarm bevatten: {codes}.",
    "en": "Not done: your reply needs the alarm's code: {codes}.",
}
_CODES_PAUSED = {
    "fr": "Pas fait: les codes envoyés par SMS sont suspendus jusqu'à {time} (trop de codes "
    "erronés sur ce site). Pour prendre l'alerte, appuyez sur 1 pendant l'appel ou utilisez le "
    "lien.",
    "nl": "Niet gedaan: codes per sms worden niet aanvaard tot {time} (te veel foute codes op "
    "deze locatie). Om het alarm op te nemen, druk op 1 tijdens de oproep of gebruik de link.",
    "en": "Not done: codes sent by SMS are paused until {time} (too many wrong codes on this "
    "site). To take the alarm, press 1 in the call or use the link.",
}
_TAKE_FIRST = {
    "fr": "Pas fait: {room} n'est pas encore pris en charge. Répondez {code} si vous y allez, "
    "puis {code}g (réglé) ou {code}f (fausse alerte) pour le clore.",
    "nl": "Niet gedaan: {room} is nog niet opgenomen. Antwoord {code} als u gaat, daarna "
    "{code}g (afgehandeld) of {code}f (vals alarm) om af te sluiten.",
    "en": "Not done: {room} is not taken yet. Reply {code} if you are going, "
    "then {code}g (handled) or {code}f (false alarm) to close it.",
}
_NOT_YOURS = {
    "fr": "Pas fait: {room} est pris en charge par {name}, qui le clôt.",
    "nl": "Niet gedaan: {room} is opgenomen door {name}, die het afsluit.",
    "en": "Not done: {room} was taken by {name}, who closes it.",
}
_TAKE_FIRST_PHONE = {
    "fr": "Pas fait: l'alerte de {room} n'est pas encore prise en charge. Répondez {code} si "
    "vous y allez, puis {code}g (réglé) ou {code}f (fausse alerte) pour la clore.",
    "nl": "Niet gedaan: het alarm van {room} is nog niet opgenomen. Antwoord {code} als u gaat, "
    "daarna {code}g (afgehandeld) of {code}f (vals alarm) om af te sluiten.",
    "en": "Not done: the alarm of {room} is not taken yet. Reply {code} if you are going, "
    "then {code}g (handled) or {code}f (false alarm) to close it.",
}
_NOT_YOURS_PHONE = {
    "fr": "Pas fait: l'alerte de {room} est prise en charge par {name}, qui la clôt.",
    "nl": "Niet gedaan: het alarm van {room} is opgenomen door {name}, die het afsluit.",
    "en": "Not done: the alarm of {room} was taken by {name}, who closes it.",
}
_CODES_LOCKED = {
    "fr": "Trop de codes erronés depuis ce téléphone: les codes sont refusés jusqu'à {time}. "
    "Appuyez sur 1 pendant l'appel d'alerte.",
    "nl": "Te veel foute codes van deze telefoon: codes worden geweigerd tot {time}. "
    "Druk op 1 tijdens de alarmoproep.",
    "en": "Too many wrong codes from this phone: codes are refused until {time}. "
    "Press 1 in the alarm call.",
}


def local_time(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime("%H:%M")


def of_phone(room_id: str) -> bool:
    """Whether an incident's room is a worker's phone (its texts say "help", not "go to")."""
    return room_id.startswith(PHONE_PREFIX)


def page(lang: Language, *, kind: str, room: str, at: datetime, timezone: str, code: int) -> str:
    """The page of an alarm of ``kind`` (``panic``, ``test``, ``duress``, ``missed_checkout``)."""
    return _PAGES[kind][lang].format(room=room, time=local_time(at, timezone), code=code)


def with_links(lang: Language, text: str, *, ack: str | None, map_link: str | None) -> str:
    """A page's text, then its acknowledgement link and the map of a phone's alarm."""
    ends = [ack] if ack else []
    if map_link:
        ends.append(f"{_MAP[lang]}: {map_link}")
    return " ".join([text, *ends])


# Plain texts cut the room labels and names they are given (the site's own text, of
# any length), like pages do: every text stays well within Twilio's 1,600 units.


def confirm(lang: Language, *, room: str, phone: bool = False) -> str:
    return (_CONFIRM_PHONE if phone else _CONFIRM)[lang].format(room=room_label(room))


def stand_down(lang: Language, *, name: str, room: str, phone: bool = False) -> str:
    template = (_STAND_DOWN_PHONE if phone else _STAND_DOWN)[lang]
    return template.format(name=name_label(name), room=room_label(room))


def already(lang: Language, *, name: str, room: str) -> str:
    return _ALREADY[lang].format(name=name_label(name), room=room_label(room))


def not_understood(lang: Language) -> str:
    return _NOT_UNDERSTOOD[lang]


def code_needed(lang: Language, *, codes: list[tuple[int, str]]) -> str:
    """The answer to a reply without a code (or with a wrong one): the person's own codes
    (the answer goes to the staff phone, never to whoever spoofed its number)."""
    return _CODE_NEEDED[lang].format(
        codes=", ".join(f"{c} ({room_label(room)})" for c, room in codes)
    )


def codes_locked(lang: Language, *, until: datetime, timezone: str) -> str:
    return _CODES_LOCKED[lang].format(time=local_time(until, timezone))


def codes_paused(lang: Language, *, until: datetime, timezone: str) -> str:
    """Too many wrong codes on the whole site: no code by SMS is acted on until ``until``."""
    return _CODES_PAUSED[lang].format(time=local_time(until, timezone))


def take_first(lang: Language, *, room: str, code: int, phone: bool = False) -> str:
    """ "482g" or "482f" for an alarm nobody has taken: SMS never closes an open alarm."""
    return (_TAKE_FIRST_PHONE if phone else _TAKE_FIRST)[lang].format(
        room=room_label(room), code=code
    )


def not_yours(lang: Language, *, room: str, name: str, phone: bool = False) -> str:
    """ "482g" from someone who neither took the alarm nor was asked to close it."""
    return (_NOT_YOURS_PHONE if phone else _NOT_YOURS)[lang].format(
        room=room_label(room), name=name_label(name)
    )


def repress(lang: Language, *, room: str, presses: int) -> str:
    return _REPRESS[lang].format(room=room_label(room), presses=presses)


def repress_all(lang: Language, *, rooms: list[tuple[str, int]], budget: int) -> str:
    """Re-press news for one or more rooms (label, presses) in one text: a line per room
    while they fit ``budget`` UTF-16 units, then how many rooms more."""
    lines = [repress(lang, room=room_label(room), presses=n) for room, n in rooms]
    for named in range(len(lines), 0, -1):
        more = len(lines) - named
        text = "\n".join(lines[:named] + ([_MORE_ROOMS[lang].format(n=more)] if more else []))
        if units(text) <= budget:
            return text
    return cut(lines[0], budget)


def unit_offline(lang: Language, *, room: str, since: datetime, timezone: str, code: int) -> str:
    return _UNIT_OFFLINE[lang].format(
        room=room_label(room), time=local_time(since, timezone), code=code
    )


def duty_gap(lang: Language, *, since: datetime, timezone: str, code: int) -> str:
    """Workers are present and nobody is on duty: the managers' page, until someone is."""
    return _DUTY_GAP[lang].format(time=local_time(since, timezone), code=code)


def duty_covered(lang: Language) -> str:
    return _DUTY_COVERED[lang]


def unit_online(lang: Language, *, room: str) -> str:
    return _UNIT_ONLINE[lang].format(room=room_label(room))


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
_FOLLOW_UP_PHONE = {
    "fr": "TOUJOURS OUVERTE: l'alerte de {room}, prise en charge par {name} à {time}. "
    "Répondez {code}g (réglé) ou {code}f (fausse alerte) pour clore.",
    "nl": "NOG OPEN: het alarm van {room}, opgenomen door {name} om {time}. Antwoord {code}g "
    "(afgehandeld) of {code}f (vals alarm) om af te sluiten.",
    "en": "STILL OPEN: the alarm of {room}, taken by {name} at {time}. Reply {code}g (handled) "
    "or {code}f (false alarm) to close.",
}
_CLOSED_PHONE = {
    "fr": "L'alerte de {room} est close.",
    "nl": "Het alarm van {room} is afgesloten.",
    "en": "The alarm of {room} is closed.",
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
_CALL_FOLLOW_UP_PHONE = {
    "fr": "L'alerte de {room} est toujours ouverte. Appuyez sur 1 si vous y allez.",
    "nl": "Het alarm van {room} is nog open. Druk op 1 als u gaat.",
    "en": "The alarm of {room} is still open. Press 1 if you are going.",
}
_CALL_THANKS_PHONE = {
    "fr": "Merci. Vous allez aider {room}. Les autres sont prévenus.",
    "nl": "Bedankt. U gaat {room} helpen. De anderen zijn verwittigd.",
    "en": "Thank you. You are going to help {room}. The others have been told.",
}
#: What a call says after a phone's room label for the kinds that are not a press.
_SPOKEN_KIND = {
    "duress": {
        "fr": "{room}: alerte sous contrainte, silencieuse. La personne ne peut pas parler "
        "librement",
        "nl": "{room}: alarm onder dwang, stil alarm. De persoon kan niet vrijuit spreken",
        "en": "{room}: duress alarm, silent. The worker cannot speak freely",
    },
    "missed_checkout": {
        "fr": "{room}: fin de mission pas confirmée à temps",
        "nl": "{room}: heeft zich niet op tijd afgemeld",
        "en": "{room}: did not check out in time",
    },
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
_DUTY_REPLACED = {
    "fr": "{name} a pris la garde jusqu'à {time}: vous n'êtes pas de garde d'ici là. "
    "Répondez DUTY si vous devriez l'être.",
    "nl": "{name} heeft de dienst overgenomen tot {time}: u hebt tot dan geen dienst. "
    "Antwoord DUTY als u dienst moet hebben.",
    "en": "{name} has taken over duty until {time}: you are not on duty until then. "
    "Reply DUTY if you should be.",
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
    lang: Language,
    *,
    room: str,
    name: str,
    at: datetime,
    timezone: str,
    code: int,
    phone: bool = False,
) -> str:
    return (_FOLLOW_UP_PHONE if phone else _FOLLOW_UP)[lang].format(
        room=room_label(room), name=name_label(name), time=local_time(at, timezone), code=code
    )


def closed(lang: Language, *, room: str, phone: bool = False) -> str:
    return (_CLOSED_PHONE if phone else _CLOSED)[lang].format(room=room_label(room))


#: Characters of a room label written or spoken in a page (labels are the site's own
#: text, of any length: a page must fit Twilio's limits whatever they hold).
ROOM_CHARS = 40
#: Characters (UTF-16 units) of a staff name in a text.
NAME_CHARS = 30
_MORE_ROOMS = {
    "fr": "+{n} autres chambres.",
    "nl": "+{n} andere kamers.",
    "en": "+{n} more rooms.",
}
_FULL_LIST = {
    "fr": "Toutes vos alertes ouvertes : {link}",
    "nl": "Al uw open alarmen: {link}",
    "en": "All your open alarms: {link}",
}
_MORE_SPOKEN = {
    "fr": "{rooms}, et {n} autres chambres",
    "nl": "{rooms}, en {n} andere kamers",
    "en": "{rooms}, and {n} more rooms",
}


#: The first word of the shortest page, by alarm kind.
_COMPACT_HEAD = {
    "panic": {"fr": "ALERTE", "nl": "ALARM", "en": "ALARM"},
    "duress": {"fr": "CONTRAINTE", "nl": "DWANG", "en": "DURESS"},
    "missed_checkout": {"fr": "SANS NOUVELLES", "nl": "NIET AFGEMELD", "en": "MISSED CHECK-OUT"},
}


def page_compact(
    lang: Language, *, kind: str, room: str, at: datetime, timezone: str, code: int
) -> str:
    """The shortest page of an alarm (a kind of ``ALARM_KINDS``): what is sent after
    Twilio refused the usual one."""
    return f"{_COMPACT_HEAD[kind][lang]} {room} {local_time(at, timezone)}, code {code}."


def units(text: str) -> int:
    """The length of ``text`` as Twilio counts it: UTF-16 code units (an emoji is two)."""
    return len(text.encode("utf-16-le")) // 2


def cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-16 units (an ellipsis marks the cut)."""
    if units(text) <= limit:
        return text
    kept, used = [], 1  # the ellipsis
    for char in text:
        used += units(char)
        if used > limit:
            break
        kept.append(char)
    return "".join(kept).rstrip() + "…"


def room_label(label: str, limit: int = ROOM_CHARS) -> str:
    """``label`` cut to ``limit`` UTF-16 units (an ellipsis marks the cut)."""
    return cut(" ".join(label.split()), limit)


def name_label(name: str, limit: int = NAME_CHARS) -> str:
    """A staff name cut to ``limit`` UTF-16 units (an ellipsis marks the cut)."""
    return cut(" ".join(name.split()), limit)


def bundle_footer(lang: Language, *, more: int, link: str | None) -> str:
    """The end of a bundled SMS: how many rooms it did not name, and the full list."""
    parts = [_MORE_ROOMS[lang].format(n=more)] if more else []
    if link:
        parts.append(_FULL_LIST[lang].format(link=link))
    return " ".join(parts)


def room_spoken(lang: Language, room: str, *, kind: str) -> str:
    """A room label as a call says it: for a duress alarm or a missed check-out, with
    what that is (a press says the room only)."""
    said = _SPOKEN_KIND.get(kind)
    return said[lang].format(room=room) if said else room


def rooms_spoken(lang: Language, rooms: list[str], *, more: int) -> str:
    """Rooms named in a call, and how many more there are."""
    named = ", ".join(rooms)
    return _MORE_SPOKEN[lang].format(rooms=named, n=more) if more else named


def call_twiml(
    lang: Language,
    *,
    room: str,
    gather_url: str,
    follow: bool,
    twice: bool = True,
    phone: bool = False,
) -> str:
    """The voice call: the room, then "press 1", twice (once in the compact form); a key
    press goes to ``gather_url``. ``phone``: every room named is a worker's phone."""
    follow_up = _CALL_FOLLOW_UP_PHONE if phone else _CALL_FOLLOW_UP
    text = escape((follow_up if follow else _CALL)[lang].format(room=room))
    say = f'<Say language="{VOICE[lang]}">{text}</Say>'
    said = f'{say}<Pause length="1"/>{say}' if twice else say
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Gather numDigits="1" action="{escape(gather_url)}" method="POST" timeout="8">'
        f"{said}</Gather>"
        f'<Say language="{VOICE[lang]}">{_CALL_NONE[lang]}</Say></Response>'
    )


def call_answer(lang: Language, text: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f'<Say language="{VOICE[lang]}">{escape(text)}</Say><Hangup/></Response>'
    )


def call_thanks(lang: Language, *, room: str, phone: bool = False) -> str:
    return (_CALL_THANKS_PHONE if phone else _CALL_THANKS)[lang].format(room=room)


def call_nothing(lang: Language) -> str:
    return _CALL_NONE[lang]


def duty_on(lang: Language, *, until: datetime, timezone: str) -> str:
    return _DUTY_ON[lang].format(time=local_time(until, timezone))


def duty_replaced(lang: Language, *, name: str, until: datetime, timezone: str) -> str:
    return _DUTY_REPLACED[lang].format(name=name_label(name), time=local_time(until, timezone))


def duty_off(lang: Language) -> str:
    return _DUTY_OFF[lang]


def opted_out(lang: Language, *, name: str) -> str:
    return _OPTED_OUT[lang].format(name=name_label(name))


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
