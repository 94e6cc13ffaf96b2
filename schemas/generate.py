"""Generate the published contract: one JSON Schema per message and an
AsyncAPI 3 document of the topics, under ``schemas/generated/``.

    python -m schemas.generate          # rewrite the files
    python -m schemas.generate --check  # exit 1 when a file is stale (CI)

Other systems subscribe from these files, so a change to a model without
regenerating them fails the build.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import ALL_MESSAGES
from . import topics as t
from .base import Message
from .cloudevents import CONTENT_TYPE, SPEC_VERSION
from .parts import (
    KAFKA_DEFAULT_MAX_BYTES,
    MAX_IDS_PER_DECISION_PART,
    MAX_PODS_PER_PART,
    PART_TARGET_BYTES,
)

OUT_DIR = Path(__file__).parent / "generated"

_TOPIC_DOCS = {
    t.K8S_OBJECTS: "Pod and Job observations from the watcher: the facts.",
    t.K8S_NODES: "Node readiness observations from the watcher. Keyed by node name.",
    t.KILL_REQUESTS: (
        "Requests to kill a Job now or at a time, and to cancel a requested kill"
        " that has not started (CLI, other systems)."
    ),
    t.CONFIG: "Versioned snapshots of the dynamic killer configuration (compacted).",
    t.KILL_COMMANDS: "Escalation commands the killer decided (deadline, delete, force-delete).",
    t.KILL_RESULTS: "What the executor got from the Kubernetes API for each command.",
    t.KILL_EVENTS: (
        "The public, stable stream of kill events: subscribe here. KillStarted and"
        " JobKilled about many pods come in parts (see their `part` and `parts`)."
    ),
    t.KILL_DECISIONS: (
        "One record per committed killer decision (parts of one when it lists many"
        " ids): the `now` it used and the input positions it had folded, for"
        " byte-for-byte replay and audit."
    ),
    t.DEADLETTER: "Records no consumer could handle: original bytes, headers, and the reason.",
    t.FORCE_RESUMES: (
        "Operators' resumes of the mass-disruption guard (`jobreaper force resume`), read"
        " whole by every killer partition (compacted, keyed by zone)."
    ),
}

_WRITERS = {
    t.K8S_OBJECTS: "The watcher and its replicas",
    t.K8S_NODES: "The watcher and its replicas",
    t.KILL_REQUESTS: "The CLI and other systems",
    t.CONFIG: "The config service",
    t.KILL_COMMANDS: "The killer",
    t.KILL_RESULTS: "The executor",
    t.KILL_EVENTS: "The killer and the executor",
    t.KILL_DECISIONS: "The killer",
    t.DEADLETTER: "Any consumer",
    t.FORCE_RESUMES: "`jobreaper force resume` (an operator)",
}


def _parts_doc(model: type[Message]) -> str | None:
    """How a message split in parts is read (None: it never is)."""
    if "parts" not in model.model_fields:
        return None
    if model.TOPIC == t.KILL_DECISIONS:
        what = f"{MAX_IDS_PER_DECISION_PART:,} ids (`command_ids` then `event_ids`)"
    else:
        what = f"{MAX_PODS_PER_PART:,} pods (`pods`, then `already_done` where present)"
    return (
        f"No record is larger than Kafka's default limit ({KAFKA_DEFAULT_MAX_BYTES:,} bytes):"
        f" one listing more than {what}, or more than {PART_TARGET_BYTES:,} bytes of them,"
        " is written as records `part` 1..`parts`, consecutive in one partition and"
        " transaction, each with the same other fields and a slice of the lists, in"
        " order; concatenate the lists of the parts for the whole message. `part` and"
        " `parts` are left out when 1 (the whole message in one record, as before they"
        " existed). Each part has its own CloudEvents id. A consumer that ignores them"
        " sees each part as a message about fewer pods."
    )


def _header_schema() -> dict[str, Any]:
    def string(description: str, **extra: Any) -> dict[str, Any]:
        return {"type": "string", "description": description, **extra}

    return {
        "type": "object",
        "required": ["ce_specversion", "ce_id", "ce_type", "ce_source", "ce_time"],
        "properties": {
            "ce_specversion": string("CloudEvents version", const=SPEC_VERSION),
            "ce_id": string("Event id; derived (reproducible) for killer output"),
            "ce_type": string("io.jobreaper.<noun>.<verb>.v<N>"),
            "ce_source": string("URI-reference of the producing service instance"),
            "ce_time": string("When the event happened (RFC 3339, UTC)", format="date-time"),
            "content-type": string("Data content type", const=CONTENT_TYPE),
        },
    }


def json_schema(model: type[Message]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    schema["$id"] = f"https://jobreaper.io/schemas/{model.CE_TYPE}.json"
    schema["x-ce-type"] = model.CE_TYPE
    schema["x-topic"] = model.TOPIC
    return schema


def asyncapi(models: tuple[type[Message], ...]) -> dict[str, Any]:
    by_topic: dict[str, list[type[Message]]] = defaultdict(list)
    for model in models:
        by_topic[model.TOPIC].append(model)
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for topic in t.ALL_TOPICS:
        refs = {}
        for model in by_topic.get(topic, []):
            name = model.__name__
            messages[name] = {
                "name": model.CE_TYPE,
                "title": name,
                "summary": (model.__doc__ or name).strip().splitlines()[0],
                "contentType": CONTENT_TYPE,
                "headers": _header_schema(),
                "payload": {"$ref": f"{model.CE_TYPE}.json"},
                "bindings": {
                    "kafka": {
                        "key": {
                            "type": "string",
                            "description": "namespace/job-name for Job-scoped messages",
                        }
                    }
                },
            }
            parts = _parts_doc(model)
            if parts is not None:
                messages[name]["description"] = parts
            refs[name] = {"$ref": f"#/components/messages/{name}"}
        channels[topic] = {
            "address": f"{{prefix}}{topic}",
            "description": _TOPIC_DOCS[topic],
            "parameters": {"prefix": {"description": "topic prefix, default 'jobreaper.'"}},
            "messages": refs,
        }
    operations = {
        f"send-{topic}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"{_WRITERS[topic]} publish on {topic}.",
        }
        for topic in t.ALL_TOPICS
    }
    return {
        "asyncapi": "3.0.0",
        "operations": operations,
        "info": {
            "title": "jobreaper",
            "version": "1.0.0",
            "description": "Topics and messages of jobreaper. Every message is a CloudEvent "
            "1.0 in Kafka binary mode: ce_* headers, JSON data.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "components": {"messages": messages},
    }


def render() -> dict[Path, str]:
    files = {OUT_DIR / f"{model.CE_TYPE}.json": json_schema(model) for model in ALL_MESSAGES}
    files[OUT_DIR / "asyncapi.json"] = asyncapi(ALL_MESSAGES)
    return {path: json.dumps(doc, indent=2, sort_keys=True) + "\n" for path, doc in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.generate", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a file is stale")
    args = parser.parse_args(argv)
    wanted = render()
    present = set(OUT_DIR.glob("*.json")) if OUT_DIR.exists() else set()
    stale = sorted(
        str(path) for path, text in wanted.items() if not path.exists() or path.read_text() != text
    )
    extra = sorted(str(path) for path in present - set(wanted))
    if args.check:
        if stale or extra:
            for name in stale:
                print(f"stale: {name}", file=sys.stderr)
            for name in extra:
                print(f"no longer generated: {name}", file=sys.stderr)
            print("run: uv run python -m schemas.generate", file=sys.stderr)
            return 1
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for path, text in wanted.items():
        path.write_text(text)
    for name in extra:
        Path(name).unlink()
    print(f"wrote {len(wanted)} files to {OUT_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
