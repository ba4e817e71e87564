"""The whole platform in one event loop: members, matching, notifications and the gateway, each a real uvicorn
server on its own port with its own SQLite database, over the real broker and a real SMTP server."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from techport_dev.kafka import free_port
from techport_dev.smtp import SmtpSink
from techport_gateway.main import create_app as gateway_app
from techport_gateway.settings import GatewaySettings
from techport_matching.main import build as build_matching
from techport_matching.settings import MatchingSettings
from techport_members.main import build as build_members
from techport_members.settings import MembersSettings
from techport_notifications.main import build as build_notifications
from techport_notifications.settings import NotificationsSettings, SmtpSettings
from techport_shared.settings import ConsumerSettings, KafkaSettings

from tests.serving import serve
from tests.waiting import eventually

__all__ = ["eventually"]

SECRET = "platform-identity-secret-0123456789"
OPERATOR_KEY = "op_test_operator_key_0123456789abcdef"


@dataclass
class Platform:
    gateway: str
    services: dict[str, str]
    sink: SmtpSink
    databases: dict[str, str]

    def client(self, key: str | None = OPERATOR_KEY) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=f"{self.gateway}/api/v1", headers=headers, timeout=15)


@pytest.fixture
async def platform(tmp_path: Path, kafka_topics: KafkaSettings) -> AsyncIterator[Platform]:
    tag = uuid.uuid4().hex[:8]
    consumer = ConsumerSettings(max_attempts=2, backoff_initial_s=0.05, auto_offset_reset="latest")
    databases = {
        name: f"sqlite:///{tmp_path / name}.db"
        for name in ("members", "matching", "notifications", "gateway")
    }
    gateway_port, members_port = free_port(), free_port()
    members_url = f"http://127.0.0.1:{members_port}"
    common = {"identity_secret": SECRET, "kafka": kafka_topics, "consumer": consumer}
    with SmtpSink(tmp_path / "mail") as sink:
        members_app, members_runtime = build_members(
            MembersSettings(database_url=databases["members"], consumer_group=f"members-{tag}", **common)
        )
        matching_app, matching_runtime, _ = build_matching(
            MatchingSettings(
                database_url=databases["matching"],
                consumer_group=f"matching-{tag}",
                members_url=members_url,
                **common,
            )
        )
        notifications_app, notifications_runtime, _ = build_notifications(
            NotificationsSettings(
                database_url=databases["notifications"],
                consumer_group=f"notifications-{tag}",
                digest_seconds=1.0,
                unsubscribe_secret=SECRET,
                public_url=f"http://127.0.0.1:{gateway_port}/api/v1",
                poll_interval_s=0.2,
                smtp=SmtpSettings(host=sink.host, port=sink.port),
                members_url=members_url,
                **common,
            )
        )
        async with contextlib.AsyncExitStack() as stack:
            urls = {
                "members": await stack.enter_async_context(serve(members_app, members_port)),
                "matching": await stack.enter_async_context(serve(matching_app)),
                "notifications": await stack.enter_async_context(serve(notifications_app)),
            }
            for runtime in (members_runtime, matching_runtime, notifications_runtime):
                await runtime.wait_for_assignment()
            gateway = gateway_app(
                GatewaySettings(
                    database_url=databases["gateway"],
                    operator_key=OPERATOR_KEY,
                    identity_secret=SECRET,
                    members_url=urls["members"],
                    matching_url=urls["matching"],
                    notifications_url=urls["notifications"],
                    rate_limit="1000/second",
                )
            )
            url = await stack.enter_async_context(serve(gateway, gateway_port))
            yield Platform(url, urls, sink, databases)
