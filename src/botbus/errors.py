"""The botbus exception tree, rooted in one class.

BotbusError
├── ConfigError          a setting is missing or malformed (start-up stops)
├── NatsServerError      the embedded nats-server could not start or stop
├── PayloadError         a bus payload failed validation (names the field)
├── ProvisionError       a service's stream or bucket could not be provisioned
├── ServiceError         deprecated: a handler refused a request (use ``Refuse``)
├── StartupError         a service could not start (broker, permissions, a hook)
└── SteppedDown          another gateway of the bot took the active-gateway lease
"""

from __future__ import annotations

from typing import Literal

StartupReason = Literal["unreachable", "refused", "hook", "broker"]


class BotbusError(Exception):
    """Root of every error botbus raises on purpose."""


class ConfigError(BotbusError):
    """A setting is missing or malformed; the message names it."""


class NatsServerError(BotbusError):
    """The embedded nats-server failed to start, become ready, or stop."""


class PayloadError(BotbusError):
    """A bus payload could not be decoded into its model.

    ``field`` is the dotted path of the first offending field ("" for the
    whole payload, e.g. junk that is not JSON).
    """

    def __init__(self, message: str, *, field: str = "", subject: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.subject = subject


class ProvisionError(BotbusError):
    """The provisioner refused a service's stream or bucket, or none answered.

    The message says which stream or bucket, and why (:mod:`botbus.provision`).
    """


class ServiceError(BotbusError):
    """Deprecated: return or raise ``botbus.service.Refuse(text)`` instead.

    The SDK still treats it as ``Refuse(user_message)``: a reply to the user,
    not retried, and counted as a request served, not as an error (a user's
    mistake is no fault of the service).
    """

    def __init__(self, user_message: str, *, code: str = "refused") -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.code = code


class StartupError(BotbusError):
    """A service could not start; the message says what failed and what to do.

    ``reason`` is ``"unreachable"`` (no broker within the connect timeout),
    ``"refused"`` (NATS refused the credentials or a subject), ``"hook"``
    (an ``on_startup`` hook raised) or ``"broker"`` (the nats-server lacks a
    feature botbus needs, e.g. it is too old); the runner maps it to an exit code.
    """

    def __init__(self, message: str, *, reason: StartupReason) -> None:
        super().__init__(message)
        self.reason: StartupReason = reason


class SteppedDown(BotbusError):
    """Another gateway of the same bot holds the lease now; this one stopped.

    Not a failure: restarted, the gateway waits as that one's standby.
    """
