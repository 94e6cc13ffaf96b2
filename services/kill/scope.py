"""Would the killer act on this Job? What ``jobreaper kill`` tells its user before
publishing: a request for a Job out of scope is recorded and never acted on, and
nothing else would say so.

The scope is decided as the killer decides it (``KillerConfig.enforce_for``), from
the newest configuration snapshot on the ``config`` topic (the built-in defaults
when there is none, as for the killer) and the Job's labels read from the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka.structs import ConsumerRecord

from schemas.annotations import ENFORCE
from schemas.config import ConfigSnapshot, KillerConfig
from schemas.topics import CONFIG
from services.runtime.kafka import read_topics_to_end
from services.runtime.messages import CODEC
from services.runtime.settings import KafkaSettings
from services.runtime.topics import TopicNames


async def newest_config(kafka: KafkaSettings) -> ConfigSnapshot | None:
    """The newest snapshot on the ``config`` topic (records that do not decode are
    skipped: the killer dead-letters them and goes on with the one before)."""
    names = TopicNames(kafka.topic_prefix)
    newest: ConfigSnapshot | None = None

    def keep(record: ConsumerRecord[bytes, bytes]) -> None:
        nonlocal newest
        message = CODEC.decode(record.headers, record.value, CONFIG).message
        if isinstance(message, ConfigSnapshot) and (
            newest is None or message.version > newest.version
        ):
            newest = message

    await read_topics_to_end(kafka, [names(CONFIG)], keep, client_id="jobreaper-kill-scope")
    return newest


def scope_warning(
    snapshot: ConfigSnapshot | None, namespace: str, name: str, labels: Mapping[str, str]
) -> str:
    """A warning when the killer would not act on the Job (``off``) or would act in
    shadow only; empty when it acts."""
    config = snapshot.config if snapshot is not None else KillerConfig()
    enforce = config.enforce_for(namespace, labels)
    version = f"config version {snapshot.version}" if snapshot else "the built-in config"
    label = labels.get(ENFORCE)
    why = f"its label {ENFORCE}={label!r}" if label is not None else f"no {ENFORCE} label"
    if enforce == "off":
        return (
            f"Job {namespace}/{name} is out of jobreaper's scope ({why}, {version}): the "
            "request is recorded but nothing will be done. Opt the Job in with "
            f"`kubectl label job -n {namespace} {name} {ENFORCE}=on` (unless the config pins "
            "its namespace or labels off); see docs/user-guide.md, Scope"
        )
    if enforce == "shadow":
        return (
            f"Job {namespace}/{name} is in shadow mode ({why}, {version}): the kill is "
            "decided and recorded as would-apply, and nothing is written to the cluster"
        )
    return ""
