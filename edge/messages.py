"""Short, localized messages for a scanner's screen, by reason and language.

The ``reason`` code is the contract; these texts are for people and may change.
"""

from __future__ import annotations

from typing import Final

from sync.rules import Reason

LANGUAGES: Final = ("en", "fr", "de", "it")
DEFAULT_LANGUAGE: Final = "en"

_TEXTS: Final[dict[Reason, tuple[str, str, str, str]]] = {
    Reason.OK: ("Welcome", "Bienvenue", "Willkommen", "Benvenuto"),
    Reason.EXIT_OK: ("Goodbye", "Au revoir", "Auf Wiedersehen", "Arrivederci"),
    Reason.MALFORMED: ("Unreadable code", "Code illisible", "Code unlesbar", "Codice illeggibile"),
    Reason.FORGED: ("Invalid code", "Code invalide", "Ungültiger Code", "Codice non valido"),
    Reason.UNKNOWN: ("Unknown ticket", "Billet inconnu", "Unbekanntes Ticket",
                     "Biglietto sconosciuto"),
    Reason.CANCELLED: ("Ticket cancelled", "Billet annulé", "Ticket storniert",
                       "Biglietto annullato"),
    Reason.UNPAID: ("Not paid", "Non payé", "Nicht bezahlt", "Non pagato"),
    Reason.WRONG_DATE: ("Wrong date", "Mauvaise date", "Falsches Datum", "Data errata"),
    Reason.WRONG_ZONE: ("Wrong zone", "Mauvaise zone", "Falsche Zone", "Zona errata"),
    Reason.TOO_EARLY: ("Too early", "Trop tôt", "Zu früh", "Troppo presto"),
    Reason.TOO_LATE: ("Too late", "Trop tard", "Zu spät", "Troppo tardi"),
    Reason.ALREADY_USED: ("Already used", "Déjà utilisé", "Bereits benutzt", "Già utilizzato"),
    Reason.ALREADY_INSIDE: ("Already inside", "Déjà à l'intérieur", "Bereits drinnen",
                            "Già dentro"),
    Reason.NOT_INSIDE: ("Not inside", "Pas à l'intérieur", "Nicht drinnen", "Non dentro"),
    Reason.ENTRIES_EXHAUSTED: ("No entries left", "Plus d'entrées", "Keine Eintritte mehr",
                               "Ingressi esauriti"),
    Reason.LIMIT_REACHED: ("Limit reached", "Limite atteinte", "Limit erreicht",
                           "Limite raggiunto"),
}

_BY_LANGUAGE: Final[dict[str, dict[str, str]]] = {
    lang: {str(reason): texts[i] for reason, texts in _TEXTS.items()}
    for i, lang in enumerate(LANGUAGES)
}
_MAX_CACHED_HEADERS: Final = 256
_header_cache: dict[str, dict[str, str]] = {}


def table_for(accept_language: str | None) -> dict[str, str]:
    """The message table for an ``Accept-Language`` header (first supported wins)."""
    if not accept_language:
        return _BY_LANGUAGE[DEFAULT_LANGUAGE]
    cached = _header_cache.get(accept_language)
    if cached is not None:
        return cached
    table = _BY_LANGUAGE[_pick(accept_language)]
    if len(_header_cache) < _MAX_CACHED_HEADERS:
        _header_cache[accept_language] = table
    return table


def _pick(header: str) -> str:
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for part in header[:256].split(","):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower()[:2]
        if lang not in _BY_LANGUAGE:
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if q > best_q:
            best, best_q = lang, q
    return best


def message(reason: Reason | str, accept_language: str | None = None) -> str:
    return table_for(accept_language)[str(reason)]
