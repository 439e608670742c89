"""The gateway's Prometheus metrics, in a registry of its own per gateway."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class GatewayMetrics:
    """Counters a gateway operator watches (served on ``/metrics``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.updates_received = Counter(
            "botbus_updates_received", "Updates received from Telegram", registry=r
        )
        self.updates_ignored = Counter(
            "botbus_updates_ignored", "Updates of kinds the gateway does not route", registry=r
        )
        self.updates_malformed = Counter(
            "botbus_updates_malformed", "Updates skipped because they were malformed", registry=r
        )
        self.updates_redelivered = Counter(
            "botbus_updates_redelivered",
            "Updates skipped because they were already ingested (Telegram sent them again)",
            registry=r,
        )
        self.routed = Counter(
            "botbus_updates_routed", "Updates by routing decision", ["route"], registry=r
        )
        self.published = Counter(
            "botbus_published", "Messages acknowledged by JetStream", registry=r
        )
        self.publish_failures = Counter(
            "botbus_publish_failures", "Batches JetStream did not acknowledge", registry=r
        )
        self.webhook_refused = Counter(
            "botbus_webhook_refused", "Webhook requests refused (bad secret)", registry=r
        )
        self.actions = Counter(
            "botbus_actions", "Outbound actions by result", ["result"], registry=r
        )
        self.duplicates_skipped = Counter(
            "botbus_actions_duplicate_skipped",
            "Outbound sends skipped because their idempotency key was already sent",
            registry=r,
        )
        self.live_services = Gauge(
            "botbus_live_services", "Services with at least one live instance", registry=r
        )
