"""ensure_topics returns only once the broker serves the topics it created: KRaft
answers CreateTopics before the broker's metadata has them, and a service that read
its partitions at once found none (the config service: "topic ... does not exist")."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.errors import KafkaError

from services.runtime import kafka
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TOPIC_SPECS, TopicNames


class FakeAdmin:
    """Creates topics at once but describes them only after ``lag`` describe calls."""

    def __init__(self, lag: int) -> None:
        self.lag = lag
        self.created: list[str] = []
        self.describes = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, topics: list[Any]) -> None:
        self.created = [t.name for t in topics]

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        self.describes += 1
        served = self.describes > self.lag
        return [
            {"topic": name, "error_code": 0, "partitions": [{"partition": 0}]}
            if served
            else {"topic": name, "error_code": 3, "partitions": []}
            for name in topics
        ]


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    fake = FakeAdmin(lag=3)
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", lambda **_: fake)
    return fake


async def test_it_waits_until_the_broker_describes_every_created_topic(admin: FakeAdmin) -> None:
    created = await kafka.ensure_topics(KafkaSettings(topic_prefix="p."))
    names = TopicNames("p.")
    assert sorted(created) == sorted(names(spec.name) for spec in TOPIC_SPECS)
    assert admin.describes == admin.lag + 1, "described until served, then no more"


async def test_topics_never_served_are_an_error_naming_them(
    admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin.lag = 10**9
    served = kafka._until_served

    async def soon(a: Any, topics: list[str], timeout_s: float = 30) -> None:
        await served(a, topics, timeout_s=0.3)

    monkeypatch.setattr(kafka, "_until_served", soon)
    with pytest.raises(KafkaError, match=r"not served after 0 s: \['p\."):
        await kafka.ensure_topics(KafkaSettings(topic_prefix="p."))
