"""``jobreaper-dev stack restart``: a component stops and starts again on the same ports
with the same data, so clients reconnect to the same address and find what they left."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from kubernetes_asyncio import client

from devtools.stack.api import StackError, StackInfo, restart_component
from tests.integration.helpers import read_topic

pytestmark = [pytest.mark.stack, pytest.mark.exclusive("restarts the stack's Kafka and API server")]


@pytest.fixture
def own_stack(stack: StackInfo) -> StackInfo:
    if stack.stack_dir is None:
        pytest.skip("restarting a component needs a stack started by devtools.stack")
    return stack


async def test_kafka_restarts_on_the_same_address_with_its_topics(
    own_stack: StackInfo, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}restart"
    producer = AIOKafkaProducer(bootstrap_servers=own_stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"before")
    finally:
        await producer.stop()
    pid_before = (own_stack.stack_dir / "run" / "kafka.pid").read_text()  # type: ignore[operator]

    took = await asyncio.to_thread(restart_component, own_stack, "kafka")

    assert took > 0
    pid_after = (own_stack.stack_dir / "run" / "kafka.pid").read_text()  # type: ignore[operator]
    assert pid_after != pid_before, "a new broker process"
    producer = AIOKafkaProducer(bootstrap_servers=own_stack.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"after")
    finally:
        await producer.stop()
    raw = [r.value for r, _ in await read_topic(own_stack.kafka_bootstrap, topic)]
    assert raw == [b"before", b"after"], "the record written before the restart is kept"


async def test_the_api_server_restarts_on_the_same_address_with_its_objects(
    own_stack: StackInfo, kube_api: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube_api)
    name = f"jr-restart-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        await asyncio.to_thread(restart_component, own_stack, "kube-apiserver")
        # The same client (same address, same certificates) works again.
        got = await core.read_namespace(name)
        assert got.metadata.name == name
    finally:
        await core.delete_namespace(name)


def test_an_unknown_component_is_a_one_line_error(own_stack: StackInfo) -> None:
    with pytest.raises(StackError, match="no such component 'zookeeper'"):
        restart_component(own_stack, "zookeeper")
