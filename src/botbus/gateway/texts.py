"""What the gateway itself says to users, in English and Spanish."""

from __future__ import annotations

from typing import Literal

Language = Literal["en", "es"]
LANGUAGES: tuple[Language, ...] = ("en", "es")

_TEXTS: dict[str, dict[Language, str]] = {
    "welcome": {
        "en": "Hi {name}! I am a bot made of small services. Here is what I can do:",
        "es": "¡Hola {name}! Soy un bot hecho de pequeños servicios. Esto es lo que sé hacer:",
    },
    "help_header": {
        "en": "Commands:",
        "es": "Comandos:",
    },
    "help_builtin": {
        "en": (
            "/help - this list\n"
            "/language en|es - choose my language\n"
            "/forgetme - delete everything the bot stores about you"
        ),
        "es": (
            "/help - esta lista\n"
            "/language en|es - elige mi idioma\n"
            "/forgetme - borra todo lo que el bot guarda sobre ti"
        ),
    },
    "help_none": {
        "en": "No service is running right now; try again in a moment.",
        "es": "Ahora mismo no hay ningún servicio en marcha; prueba de nuevo en un momento.",
    },
    "help_admin": {
        "en": "(admin)",
        "es": "(admin)",
    },
    "unknown_command": {
        "en": "Unknown command /{command}. Send /help to see what I can do.",
        "es": "Comando desconocido /{command}. Envía /help para ver lo que sé hacer.",
    },
    "unavailable": {
        "en": "{service} is unavailable right now; I will answer when it is back.",
        "es": "{service} no está disponible ahora mismo; te responderé cuando vuelva.",
    },
    "admin_only": {
        "en": (
            "/{command} is for the bot's admins only. To become one, the bot's operator "
            "adds your user id {user_id} to BOTBUS_ADMIN_IDS and restarts the bot."
        ),
        "es": (
            "/{command} es solo para los administradores del bot. Para serlo, quien opera "
            "el bot añade tu id de usuario {user_id} a BOTBUS_ADMIN_IDS y lo reinicia."
        ),
    },
    "admin_only_anonymous": {
        "en": (
            "/{command} is for the bot's admins only, and you are writing anonymously as "
            'the group, so I cannot tell who you are. Turn off "Remain anonymous" in your '
            "admin rights and send it again (your user id must be in BOTBUS_ADMIN_IDS)."
        ),
        "es": (
            "/{command} es solo para los administradores del bot, y escribes de forma anónima "
            'como el grupo, así que no sé quién eres. Desactiva "Permanecer anónimo" en tus '
            "permisos de administrador y envíalo de nuevo (tu id debe estar en BOTBUS_ADMIN_IDS)."
        ),
    },
    "language_set": {
        "en": "From now on I will speak English.",
        "es": "A partir de ahora hablaré en español.",
    },
    "language_usage": {
        "en": "Usage: /language en or /language es (now: {current}).",
        "es": "Uso: /language en o /language es (ahora: {current}).",
    },
    "forgotten": {
        "en": "Done: every service has been asked to delete what it stores about you.",
        "es": "Hecho: he pedido a todos los servicios que borren lo que guardan sobre ti.",
    },
    "slow_down": {
        "en": "You are sending messages too fast; please slow down. I will skip some.",
        "es": "Envías mensajes demasiado rápido; ve más despacio, por favor. Me saltaré algunos.",
    },
    "button_gone": {
        "en": "This button no longer works.",
        "es": "Este botón ya no funciona.",
    },
    "menu_help": {"en": "What I can do", "es": "Lo que sé hacer"},
    "menu_language": {"en": "Choose my language (en/es)", "es": "Elige mi idioma (en/es)"},
    "menu_forgetme": {
        "en": "Delete what the bot stores about you",
        "es": "Borra lo que el bot guarda sobre ti",
    },
}


def text(key: str, language: Language, **values: object) -> str:
    """The gateway text ``key`` in ``language``, with ``values`` filled in."""
    return _TEXTS[key][language].format(**values)


def pick_language(preferred: str | None, language_code: str | None) -> Language:
    """The user's language: their /language choice, else Telegram's code, else English."""
    for candidate in (preferred, language_code):
        base = (candidate or "").split("-")[0].lower()
        if base == "es":
            return "es"
        if base == "en":
            return "en"
    return "en"
