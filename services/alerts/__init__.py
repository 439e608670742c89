"""Alerts service: channels people subscribe to, fed by NATS, HTTP and MQTT, plus reminders.

Pure logic lives in small modules that need no bus (:mod:`.reminders`,
:mod:`.channels`, the planning half of :mod:`.fanout`); :mod:`.store` and
:mod:`.schedules` keep the state in JetStream; :mod:`.httpapi` is the
``POST /alerts/<channel>`` endpoint; :mod:`.runtime` runs the alert and
reminder consumers; :mod:`.service` maps commands and events onto all that.
See docs/alerts.md.
"""
