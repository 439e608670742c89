"""NATS micro registration (``$SRV.PING/INFO/STATS``) with botbus metadata.

nats-py's ``nats.micro.Service`` answers the three verbs, but its endpoints
are core request/reply subscriptions and botbus work arrives from
JetStream consumers. So we keep its control-subject handling and response
formats, and report our own endpoints (one per command, plus one per event
kind) with the statistics the consume loops record.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.micro.service import (
    EndpointInfo,
    EndpointStats,
    ServiceConfig,
    ServiceInfo,
    ServiceStats,
)
from nats.micro.service import Service as MicroService

META_COMMANDS = "botbus.commands"
META_LISTENS = "botbus.listens"
META_INSTANCE = "botbus.instance"
META_DESCRIPTION = "botbus.description"


@dataclass
class EndpointCounter:
    """Real request statistics of one endpoint (a command or an event kind)."""

    name: str
    subject: str
    queue_group: str
    metadata: dict[str, str] = field(default_factory=dict)
    num_requests: int = 0
    num_errors: int = 0
    processing_time: int = 0  # nanoseconds
    last_error: str = ""

    def record(self, started_ns: int, error: str | None) -> None:
        """Count one handled delivery that started at ``started_ns`` (monotonic)."""
        self.num_requests += 1
        self.processing_time += time.monotonic_ns() - started_ns
        if error is not None:
            self.num_errors += 1
            self.last_error = error

    @property
    def average_processing_time(self) -> int:
        """Mean processing time in nanoseconds."""
        return self.processing_time // self.num_requests if self.num_requests else 0


class Registration(MicroService):
    """A micro service whose endpoints are botbus's JetStream-fed handlers."""

    def __init__(
        self,
        client: Client,
        *,
        instance_id: str,
        name: str,
        version: str,
        description: dict[str, str],
        metadata: dict[str, str],
        endpoints: list[EndpointCounter],
    ) -> None:
        meta = {
            **metadata,
            META_INSTANCE: instance_id,
            META_DESCRIPTION: json.dumps(description, ensure_ascii=False),
        }
        super().__init__(
            client,
            ServiceConfig(
                name=name,
                version=version,
                description=description.get("en") or next(iter(description.values()), ""),
                metadata=meta,
            ),
        )
        # The instance id is ours (logs, /ping) rather than a fresh nuid.
        self._id = instance_id
        self.counters = endpoints

    def info(self) -> ServiceInfo:
        """INFO reply listing our endpoints."""
        info = super().info()
        info.endpoints = [
            EndpointInfo(
                name=c.name, subject=c.subject, queue_group=c.queue_group, metadata=c.metadata
            )
            for c in self.counters
        ]
        return info

    def stats(self) -> ServiceStats:
        """STATS reply with the real counters."""
        stats = super().stats()
        stats.endpoints = [
            EndpointStats(
                name=c.name,
                subject=c.subject,
                queue_group=c.queue_group,
                num_requests=c.num_requests,
                num_errors=c.num_errors,
                processing_time=c.processing_time,
                average_processing_time=c.average_processing_time,
                last_error=c.last_error,
            )
            for c in self.counters
        ]
        return stats
