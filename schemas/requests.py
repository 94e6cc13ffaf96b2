"""Kill requests: "kill this Job (now, or at a time)" and "do not kill it after all",
from the CLI or another system."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final

from pydantic import StringConstraints

from .base import Message, UtcDatetime, job_key
from .topics import FORCE_RESUMES, KILL_REQUESTS

MAX_REASON_CHARS: Final = 1024
MAX_REQUESTED_BY_CHARS: Final = 256

# Other systems write this topic, and the killer copies a request's text into the
# decision records and kill events it writes in one transaction: an unbounded
# reason (the broker takes ~1 MB) would make every such transaction too large, and
# the partition would stop deciding. Bounded here, a request over the limits is a
# decode error: dead-lettered with its reason, never folded.
_Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
_Namespace = Annotated[str, StringConstraints(min_length=1, max_length=63)]
_Name = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class KillRequested(Message):
    """Someone asked for a Job to be killed.

    Like Furiko's ``spec.killTimestamp``: a time in the future waits and the
    kill becomes due exactly then. The requests for one Job are one register:
    the newest (in the partition's order) replaces an earlier one's time, later
    or earlier, and a :class:`KillCancelRequested` clears it, until the kill
    starts (the killer decided it); from then on the kill is final. Between this
    register and the ``jobreaper.io/kill-timestamp`` annotation the earlier time
    wins (docs/user-guide.md, "Cancel and postpone"). Without ``job_uid`` the
    request targets the Job that had this name when it was made
    (``requested_at``), never a later Job re-created under the same name.
    """

    CE_TYPE: ClassVar[str] = "io.jobreaper.kill.requested.v1"
    TOPIC: ClassVar[str] = KILL_REQUESTS

    request_id: _Id
    namespace: _Namespace
    """A namespace name (a DNS label: at most 63 characters)."""
    job_name: _Name
    """A Job name (a DNS subdomain: at most 253 characters)."""
    job_uid: _Id | None = None
    """Pin the request to one Job object; ``None``: the Job of that name at ``requested_at``."""
    kill_at: UtcDatetime | None = None
    """When to kill; ``None`` means at ``requested_at``."""
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] = ""
    """Free text, recorded in the kill events (at most 1,024 characters)."""
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REQUESTED_BY_CHARS)]
    """Who asked (user, system; at most 256 characters)."""
    requested_at: UtcDatetime

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


class KillCancelRequested(Message):
    """Someone asked that a requested kill not happen: it clears the requests of the
    Job (:class:`KillRequested`) published before it, if the kill has not started
    (the killer decided it). A kill that started is final: this then changes
    nothing. It does not touch the ``jobreaper.io/kill-timestamp`` annotation
    (remove the annotation for that). Without ``job_uid`` it targets the Job that
    had this name when it was made (``requested_at``), as a request does.
    """

    CE_TYPE: ClassVar[str] = "io.jobreaper.kill.cancel-requested.v1"
    TOPIC: ClassVar[str] = KILL_REQUESTS

    request_id: _Id
    namespace: _Namespace
    """A namespace name (a DNS label: at most 63 characters)."""
    job_name: _Name
    """A Job name (a DNS subdomain: at most 253 characters)."""
    job_uid: _Id | None = None
    """Pin the cancellation to one Job object; ``None``: the Job of that name at
    ``requested_at``."""
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] = ""
    """Free text (at most 1,024 characters)."""
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REQUESTED_BY_CHARS)]
    """Who asked (user, system; at most 256 characters)."""
    requested_at: UtcDatetime

    def kafka_key(self) -> str:
        return job_key(self.namespace, self.job_name)


_Zone = Annotated[str, StringConstraints(max_length=253)]


class ForceResumeRequested(Message):
    """An operator says force deletion may go on although the mass-disruption guard
    is tripped (``jobreaper force resume``): the nodes silent now (their loss
    observed at or before ``requested_at``) no longer count towards the guard, in
    ``zone`` or, without one, in every zone. Nodes lost later count again (a new
    mass event trips the guard again).

    On ``force.resumes``, a topic of its own that every killer partition reads whole
    (as ``k8s.nodes`` and ``config``), not ``kill.requests``, which is partitioned by
    Job: every partition decides the guard, and must fold every resume. Not on
    ``k8s.nodes`` either: only the watcher writes that topic, and whoever may write
    it could forge a node's deletion (a fence). The guard compares ``requested_at``
    with the nodes' loss times, so the order between this topic and ``k8s.nodes`` does
    not matter. Compacted by zone: the newest resume per zone is all a state keeps."""

    CE_TYPE: ClassVar[str] = "io.jobreaper.force.resume-requested.v1"
    TOPIC: ClassVar[str] = FORCE_RESUMES

    request_id: _Id
    zone: _Zone | None = None
    """Only this ``topology.kubernetes.io/zone`` (``""``: the nodes without one);
    ``None``: every zone."""
    reason: Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS)] = ""
    requested_by: Annotated[str, StringConstraints(min_length=1, max_length=MAX_REQUESTED_BY_CHARS)]
    """Who (user@host, or ``--by``)."""
    requested_at: UtcDatetime

    def kafka_key(self) -> str:
        return "*" if self.zone is None else f"zone/{self.zone}"


REQUESTS: tuple[type[Message], ...] = (KillRequested, KillCancelRequested)
