"""The local stack's Kafka cluster id is one the storage tool accepts."""

import base64
import uuid
from unittest import mock

from devtools.stack.kafka import kafka_cluster_id


def test_an_id_that_would_start_with_a_dash_is_drawn_again() -> None:
    # 0xf8 in the first byte encodes to "-" in url-safe base64: CI once drew one
    # and kafka-storage read it as an option.
    dash = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15)
    plain = uuid.UUID(bytes=b"\x01" * 16)
    assert base64.urlsafe_b64encode(dash.bytes).startswith(b"-")
    with mock.patch("devtools.stack.kafka.uuid.uuid4", side_effect=[dash, dash, plain]):
        cluster_id = kafka_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(plain.bytes).rstrip(b"=").decode()
    assert len(cluster_id) == 22
