"""Exit codes of every botbus process, in one table.

The gateway and every service exit with these, after one log line saying
what failed and what to do. ``botbus up`` restarts a child that exited with
a code in :data:`PERMANENT` only after its configuration changed, that is
never: a restart cannot fix a bad setting, a refused login or an old broker.

==  ===================================================================
0   stopped cleanly after SIGTERM / Ctrl-C
1   an unexpected error (a bug; BOTBUS_LOG_LEVEL=DEBUG shows the traceback)
2   a setting is missing or malformed, a port is taken, or Telegram
    rejected the token or the webhook URL
3   NATS unreachable within BOTBUS_NATS_CONNECT_TIMEOUT
4   NATS refused the user (password, or a subject in nats.conf)
5   an ``on_startup`` hook of a service raised
6   the nats-server lacks what botbus needs (too old)
7   a gateway stepped down: another gateway of the bot took over (a
    restart makes it the standby)
==  ===================================================================
"""

from __future__ import annotations

from botbus.errors import BotbusError, ConfigError, StartupError, StartupReason, SteppedDown

EXIT_OK = 0
EXIT_FAILURE = 1  # an unexpected error: a bug
EXIT_CONFIG = 2  # a setting is missing or malformed (or a port is taken, a token refused)
EXIT_UNREACHABLE = 3  # no broker within the connect timeout
EXIT_REFUSED = 4  # the broker refused the credentials or a subject
EXIT_HOOK = 5  # an on_startup hook raised
EXIT_BROKER = 6  # the broker is too old for botbus
EXIT_STEPPED_DOWN = 7  # another gateway of the bot is active now; restart as its standby

STARTUP_EXITS: dict[StartupReason, int] = {
    "unreachable": EXIT_UNREACHABLE,
    "refused": EXIT_REFUSED,
    "hook": EXIT_HOOK,
    "broker": EXIT_BROKER,
}

# Codes a restart cannot fix: the supervisor reports them and does not restart.
PERMANENT = frozenset({EXIT_CONFIG, EXIT_REFUSED, EXIT_BROKER})


def exit_code_for(exc: BotbusError) -> int:
    """The exit code of a process that stopped on ``exc``."""
    if isinstance(exc, StartupError):
        return STARTUP_EXITS[exc.reason]
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, SteppedDown):
        return EXIT_STEPPED_DOWN
    return EXIT_FAILURE
