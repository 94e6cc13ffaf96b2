"""Every message: a round trip through the codec, and generated files that are current."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from typing import Any, get_args, get_origin

import pytest
from pydantic import AwareDatetime, BaseModel

from schemas import ALL_MESSAGES, generate
from schemas.base import Message
from services.runtime.messages import CODEC

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _example_value(annotation: Any) -> Any:
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return get_args(annotation)[0]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return _example_value(next(a for a in get_args(annotation) if a is not type(None)))
    if origin is tuple:
        return (_example_value(get_args(annotation)[0]),)
    if annotation is str:
        return "x"
    if annotation is int:
        return 1
    if annotation is float:
        return 0.5
    if annotation is bool:
        return True
    if annotation in (datetime, AwareDatetime):
        return AT
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _example(annotation)
    raise AssertionError(f"no example for {annotation!r}")


_NEEDED_OPTIONALS = {
    "CommandIssued": ("pod_name", "pod_uid"),
    "CommandApplied": ("pod_name", "pod_uid"),
}
"""Optional fields a model's own validator requires for the example's values (a pod
step, the first ``Step``, names its pod)."""


def _example(model: type[BaseModel]) -> Any:
    needed = _NEEDED_OPTIONALS.get(model.__name__, ())
    values = {
        name: _example_value(field.annotation)
        for name, field in model.model_fields.items()
        if field.is_required() or name in needed
    }
    return model(**values)


@pytest.mark.parametrize("model", ALL_MESSAGES, ids=lambda m: m.CE_TYPE)
def test_every_message_round_trips_through_the_codec(model: type[Message]) -> None:
    message = _example(model)
    record = CODEC.encode(message, source="/test", event_id="e1", time=AT)
    assert record.topic == model.TOPIC
    assert record.key == message.kafka_key().encode()
    assert CODEC.decode(record.headers, record.value).message == message


def test_every_ce_type_follows_the_naming_rule() -> None:
    for model in ALL_MESSAGES:
        parts = model.CE_TYPE.split(".")
        assert parts[:2] == ["io", "jobreaper"], model.CE_TYPE
        assert parts[-1] == "v1", model.CE_TYPE


def test_generated_schemas_are_current() -> None:
    assert generate.main(["--check"]) == 0, "run: uv run python -m schemas.generate"


def _command(**fields: Any) -> dict[str, Any]:
    return {
        "command_id": "c",
        "step": "fail-job",
        "namespace": "ns",
        "job_name": "j",
        "job_uid": "job-uid",
        "trigger": "Killed",
        "reason": "Killed",
        "rule": "job.failure-target",
        "config_version": 0,
        "due_at": AT,
        "decided_at": AT,
        **fields,
    }


def test_fail_job_names_the_job_and_no_pod_and_pod_steps_name_their_pod() -> None:
    from pydantic import ValidationError

    from schemas.commands import CommandApplied, CommandIssued

    fail_job = CommandIssued(**_command())
    record = CODEC.encode(fail_job, source="/test", event_id="e1", time=AT)
    assert CODEC.decode(record.headers, record.value).message == fail_job
    assert (fail_job.pod_name, fail_job.pod_uid) == (None, None)
    with pytest.raises(ValidationError, match="pod_name and pod_uid must be absent"):
        CommandIssued(**_command(pod_name="p", pod_uid="u"))
    with pytest.raises(ValidationError, match="requires job_uid"):
        CommandIssued(**_command(job_uid=None))
    with pytest.raises(ValidationError, match="targets a pod"):
        CommandIssued(**_command(step="delete", rule="ladder.delete-method"))
    result = {"command_id": "c", "namespace": "ns", "job_name": "j", "applied_at": AT}
    CommandApplied(**result, step="fail-job", job_uid="u", outcome="applied")
    with pytest.raises(ValidationError, match="targets a pod"):
        CommandApplied(**result, step="delete", outcome="applied")
