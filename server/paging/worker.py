"""What a worker reads and hears when their phone's data connection failed and they
raised the alarm by the fallback SMS or call: received, who is coming, a code not
recognised, and the call's TwiML. In French, Dutch and English.

Nothing here ever names the kind of an alarm: a duress alarm is never shown to the
phone. Texts are GSM-7 and one SMS segment; the TwiML is built from these fixed
words, a staff name cut to :data:`messages.NAME_CHARS` and the callback URL, far
within Twilio's 64 kB for TwiML served from a URL (error 11750).
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from server.paging.messages import VOICE, name_label
from server.site import Language

_RECEIVED = {
    "fr": "Alerte transmise. Nous appelons votre personne de référence.",
    "nl": "Alarm ontvangen. We bellen uw referentiepersoon.",
    "en": "Alarm received. We are calling your reference person.",
}
_GOING = {
    "fr": "{name} arrive.",
    "nl": "{name} komt eraan.",
    "en": "{name} is coming.",
}
_WRONG_CODE = {
    "fr": "Code non reconnu: envoyez le code affiché dans votre app panicbutton.",
    "nl": "Code niet herkend: stuur de code die uw panicbutton-app toont.",
    "en": "Code not recognised: send the code shown in your panicbutton app.",
}
_ASK = {
    "fr": "Tapez votre code, puis dièse.",
    "nl": "Toets uw code in, en dan hekje.",
    "en": "Enter your code, then hash.",
}
_RAISED = {
    "fr": "Alerte lancée. Nous appelons votre personne de référence.",
    "nl": "Alarm gegeven. We bellen uw referentiepersoon.",
    "en": "Alarm raised. We are calling your reference person.",
}
_NOT_RECOGNISED = {
    "fr": "Code non reconnu.",
    "nl": "Code niet herkend.",
    "en": "Code not recognised.",
}
_XML = '<?xml version="1.0" encoding="UTF-8"?>'
#: Seconds the call waits for the first key (Twilio's Gather ``timeout``).
KEY_WAIT = 10


def received(lang: Language) -> str:
    """The answer to the fallback SMS: the alarm is in, staff are being paged."""
    return _RECEIVED[lang]


def going(lang: Language, *, name: str) -> str:
    """Someone acknowledged the worker's alarm: who is coming."""
    return _GOING[lang].format(name=name_label(name))


def wrong_code(lang: Language) -> str:
    return _WRONG_CODE[lang]


def _say(lang: Language, text: str) -> str:
    return f"<Say language={quoteattr(VOICE[lang])}>{escape(text)}</Say>"


def ask_code(lang: Language, *, action: str, digits: int, again: bool = False) -> str:
    """The call's TwiML: "enter your code, then hash" (after "not recognised" when
    ``again``); the ``digits`` keys of a code go to ``action``. Asked twice before the
    call hangs up."""

    def gather(said: str) -> str:
        return (
            f'<Gather input="dtmf" finishOnKey="#" numDigits="{digits}" '
            f'timeout="{KEY_WAIT}" action={quoteattr(action)} method="POST">'
            f"{_say(lang, said)}</Gather>"
        )

    first = f"{_NOT_RECOGNISED[lang]} {_ASK[lang]}" if again else _ASK[lang]
    return f"{_XML}<Response>{gather(first)}{gather(_ASK[lang])}<Hangup/></Response>"


def call_said(lang: Language, text: str) -> str:
    """TwiML that says ``text`` and hangs up."""
    return f"{_XML}<Response>{_say(lang, text)}<Hangup/></Response>"


def raised(lang: Language) -> str:
    return _RAISED[lang]


def not_recognised(lang: Language) -> str:
    return _NOT_RECOGNISED[lang]


def reject() -> str:
    """A call from a number that may not raise an alarm: refused unanswered (the caller
    hears it busy; nothing says a site is here)."""
    return f"{_XML}<Response><Reject/></Response>"


def hang_up() -> str:
    return f"{_XML}<Response><Hangup/></Response>"
