"""jobreaper's annotations on Jobs and pods: their names, the values they take,
and the one parser of those values.

Annotations are written by users, so every value here is hostile until parsed.
The parsers are **total**: they never raise, whatever text they are given, and
they return either a bounded value or an :class:`Invalid` that says what was
expected. The killer's core reads the values (an invalid one counts as absent,
except ``forbid-force-deletion``, see below); the watcher tells the user about
the :class:`Invalid` ones (a Warning Event on the object, once per value); the
ValidatingAdmissionPolicy in ``deploy/kubernetes/admission/`` (installed by the
kustomize base) refuses them when they are written, at ``kubectl apply``, with
the same rules, regexes and bounds and the words of :data:`EXPECTED`
(``tests/integration/deploy/test_admission_policy.py`` sends both the same values
on a real API server and requires the same verdicts: change both together).

The accepted forms (deliberately narrow, so that CEL on the API server and this
module agree exactly):

* ``kill-timestamp``: RFC 3339 with a zone, ``YYYY-MM-DDTHH:MM:SS[.fraction]``
  then ``Z`` or ``+HH:MM``/``-HH:MM`` (uppercase ``T`` and ``Z``; at most 9
  fraction digits), between 1970-01-01 and 9999-12-31 UTC. A time in the past
  means "kill now".
* ``pending-timeout-seconds`` / ``running-timeout-seconds``: ASCII decimal
  digits only, ``0`` to :data:`MAX_TIMEOUT_SECONDS` (one year; ``0`` disables).
* ``forbid-force-deletion``: ``"true"`` or ``"false"`` (any case). Any other
  value is reported *and read as forbidding*: a user who wrote ``"yes"`` meant
  to forbid, and a force deletion cannot be taken back.

Surrounding blanks are ignored everywhere: ASCII space, tab, CR, LF, FF and VT
(:data:`BLANKS`), not every Unicode space ``str.strip()`` would take (CEL's
``trim()`` takes Go's set, which differs: the policy matches the blanks with a
regex instead, and both sides use this narrower set). Letter case is ASCII only.
Values longer than :data:`MAX_VALUE_LENGTH` characters (code points, as CEL's
``size()`` counts them) are invalid before any parsing is tried (a 5,000-digit
number costs nothing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

ANNOTATION_PREFIX: Final = "jobreaper.io/"
"""Annotations (and labels) under this prefix are kept on observations."""

KILL_TIMESTAMP: Final = "jobreaper.io/kill-timestamp"
"""Job annotation: RFC 3339 time at which to kill the Job (Furiko's ``spec.killTimestamp``)."""
PENDING_TIMEOUT: Final = "jobreaper.io/pending-timeout-seconds"
"""Job annotation: pending timeout for the Job's pods, in seconds; ``0`` disables."""
RUNNING_TIMEOUT: Final = "jobreaper.io/running-timeout-seconds"
"""Job annotation: running timeout for the Job's pods, in seconds (from the containers' start)."""
FORBID_FORCE_DELETION: Final = "jobreaper.io/forbid-force-deletion"
"""Job or Pod annotation (or label): ``"true"`` forbids force deletion of the pod(s)."""
SAFE_TO_FORCE_DELETE: Final = "jobreaper.io/safe-to-force-delete"
"""Job or Pod annotation: ``"true"`` says the pod may be force-deleted on a node that is
not fenced although it mounts a ReadWriteOnce or ReadWriteOncePod
PersistentVolumeClaim (its processes may still be writing there: the user says a
second writer does no harm). Any other value, valid or not, does not opt in."""
ENFORCE: Final = "jobreaper.io/enforce"
"""Job **label**: ``on``, ``shadow`` or ``off``, the Job opting in or out by itself (a
label, so a CronJob's ``jobTemplate`` carries it and config selectors can match it)."""
ENFORCE_VALUES: Final = ("off", "shadow", "on")
ENFORCE_EXPECTED: Final = '"on", "shadow" or "off" (any other value counts as absent)'
"""What the label takes, in the admission policy's words too (apart from
:data:`EXPECTED`, which is about annotations)."""

MAX_TIMEOUT_SECONDS: Final = 366 * 24 * 3600
"""The largest pending or running timeout an annotation may set (a year and a day).
The configured defaults stop at 7 days (``services/config/validation.py``); a
Job's own running timeout may well be weeks for a training run."""
MAX_VALUE_LENGTH: Final = 64
"""Longer values are invalid outright (the longest valid one, a timestamp with
nanoseconds and an offset, has 35 characters)."""
BLANKS: Final = " \t\n\r\f\v"
"""The surrounding characters a value may have: ASCII blanks only (the policy's
regex class ``[ \\t\\n\\r\\f\\v]``)."""
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

EXPECTED: Final[Mapping[str, str]] = {
    KILL_TIMESTAMP: (
        "an RFC 3339 time with a zone, e.g. 2026-12-06T18:00:00Z or 2026-12-06T19:00:00+01:00, "
        "between 1970 and 9999"
    ),
    PENDING_TIMEOUT: f"whole seconds from 0 to {MAX_TIMEOUT_SECONDS}, digits only (0 disables)",
    RUNNING_TIMEOUT: f"whole seconds from 0 to {MAX_TIMEOUT_SECONDS}, digits only (0 disables)",
    FORBID_FORCE_DELETION: '"true" or "false" (any other value is read as "true")',
    SAFE_TO_FORCE_DELETE: '"true" or "false" (any other value is read as "false")',
}
"""What each annotation takes, in the words the user is told."""

_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))"
)
"""ASCII digits only: ``\\d`` would take any Unicode digit, and ``int()`` too."""
_DIGITS: Final = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class Invalid:
    """A jobreaper annotation (or label) whose value is not one it takes."""

    annotation: str
    value: str
    expected: str

    def message(self) -> str:
        """One line for a person: what is wrong and what would be right."""
        shown = self.value if len(self.value) <= MAX_VALUE_LENGTH else self.value[:40] + "..."
        return f"{self.annotation}: {shown!r} is not valid; expected {self.expected}"


def _invalid(annotation: str, value: str) -> Invalid:
    return Invalid(annotation, value, EXPECTED[annotation])


def parse_timestamp(value: str) -> datetime | None:
    """``value`` as an aware instant in UTC if it is an RFC 3339 time in the accepted
    form and window, else ``None``. Total."""
    if len(value) > MAX_VALUE_LENGTH:
        return None
    m = _RFC3339.fullmatch(value.strip(BLANKS))
    if m is None:
        return None
    year, month, day, hour, minute, second, fraction, z, sign, oh, om = m.groups()
    micro = int((fraction or "0").ljust(6, "0")[:6])
    if z:
        offset = timedelta(0)
    else:
        if int(oh) > 23 or int(om) > 59:
            return None
        offset = timedelta(hours=int(oh), minutes=int(om))
        if sign == "-":
            offset = -offset
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro
        )
        # Naive arithmetic first: converting an aware 0001-01-01T00:00:00+14:00 to UTC
        # overflows, a naive subtraction only leaves datetime's range (OverflowError).
        utc = (local - offset).replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    if utc < EARLIEST or utc > LATEST:
        return None
    return utc


def parse_seconds(value: str) -> int | None:
    """``value`` as whole seconds in ``0..MAX_TIMEOUT_SECONDS``, else ``None``. Total."""
    if len(value) > MAX_VALUE_LENGTH:
        return None
    text = value.strip(BLANKS)
    if _DIGITS.fullmatch(text) is None:
        return None
    seconds = int(text)
    return seconds if seconds <= MAX_TIMEOUT_SECONDS else None


def parse_flag(value: str) -> bool | None:
    """``"true"``/``"false"`` in any ASCII case (surrounding blanks ignored), else ``None``."""
    text = value.strip(BLANKS) if len(value) <= MAX_VALUE_LENGTH else ""
    # ASCII case only, as the policy spells it out (no Unicode case mapping: RE2's
    # (?i) would take U+017F for "s"; str.lower() happens to agree on these letters).
    text = text.lower() if text.isascii() else text
    if text == "true":
        return True
    if text == "false":
        return False
    return None


def parse_enforce(value: str | None) -> str | None:
    """A ``jobreaper.io/enforce`` value: ``"on"``, ``"shadow"`` or ``"off"`` in any ASCII
    case (surrounding blanks ignored), else ``None`` (absent or invalid). Total."""
    if value is None or len(value) > MAX_VALUE_LENGTH:
        return None
    text = value.strip(BLANKS)
    text = text.lower() if text.isascii() else text
    return text if text in ENFORCE_VALUES else None


def invalid_enforce(labels: Mapping[str, str]) -> Invalid | None:
    """The Job's ``jobreaper.io/enforce`` label if it is set to a value it does not take."""
    raw = labels.get(ENFORCE)
    if raw is None or parse_enforce(raw) is not None:
        return None
    return Invalid(ENFORCE, raw, ENFORCE_EXPECTED)


@dataclass(frozen=True, slots=True)
class JobAnnotations:
    """What a Job's jobreaper annotations say, parsed (absent or invalid: ``None``)."""

    kill_at: datetime | None = None
    pending_timeout_s: int | None = None
    running_timeout_s: int | None = None
    """``None`` also when 0 (no running timeout)."""
    forbid_force_deletion: bool = False
    safe_to_force_delete: bool = False
    """``jobreaper.io/safe-to-force-delete: "true"`` (an invalid value: False)."""
    invalid: tuple[Invalid, ...] = ()


NO_JOB_ANNOTATIONS: Final = JobAnnotations()


def job_annotations(annotations: Mapping[str, str]) -> JobAnnotations:
    """Parse a Job's jobreaper annotations. Total: never raises."""
    if not annotations:
        return NO_JOB_ANNOTATIONS
    invalid: list[Invalid] = []
    kill_at = pending = running = None
    raw = annotations.get(KILL_TIMESTAMP)
    if raw is not None:
        kill_at = parse_timestamp(raw)
        if kill_at is None:
            invalid.append(_invalid(KILL_TIMESTAMP, raw))
    raw = annotations.get(PENDING_TIMEOUT)
    if raw is not None:
        pending = parse_seconds(raw)
        if pending is None:
            invalid.append(_invalid(PENDING_TIMEOUT, raw))
    raw = annotations.get(RUNNING_TIMEOUT)
    if raw is not None:
        running = parse_seconds(raw)
        if running is None:
            invalid.append(_invalid(RUNNING_TIMEOUT, raw))
    forbid, problem = _forbid(annotations.get(FORBID_FORCE_DELETION))
    if problem is not None:
        invalid.append(problem)
    safe, problem = _safe(annotations.get(SAFE_TO_FORCE_DELETE))
    if problem is not None:
        invalid.append(problem)
    return JobAnnotations(kill_at, pending, running or None, forbid, safe, tuple(invalid))


def _safe(raw: str | None) -> tuple[bool, Invalid | None]:
    """The opt-in permits a dangerous act: only a valid ``"true"`` gives it."""
    if raw is None:
        return False, None
    flag = parse_flag(raw)
    if flag is None:
        return False, _invalid(SAFE_TO_FORCE_DELETE, raw)
    return flag, None


def safe_to_force_delete(annotations: Mapping[str, str]) -> tuple[bool, Invalid | None]:
    """Whether a pod's own annotation opts it in to force deletion despite an exclusive
    volume claim, and the invalid value if there is one. Total."""
    return _safe(annotations.get(SAFE_TO_FORCE_DELETE))


def _forbid(raw: str | None) -> tuple[bool, Invalid | None]:
    if raw is None:
        return False, None
    flag = parse_flag(raw)
    if flag is None:
        return True, _invalid(FORBID_FORCE_DELETION, raw)
    return flag, None


def forbids_force_deletion(
    annotations: Mapping[str, str], labels: Mapping[str, str]
) -> tuple[bool, tuple[Invalid, ...]]:
    """Whether a pod's own annotation or label forbids its force deletion (either
    suffices), and the invalid values found. Total."""
    by_annotation, a = _forbid(annotations.get(FORBID_FORCE_DELETION))
    by_label, b = _forbid(labels.get(FORBID_FORCE_DELETION))
    return by_annotation or by_label, tuple(p for p in (a, b) if p is not None)


__all__ = [
    "ANNOTATION_PREFIX",
    "BLANKS",
    "ENFORCE",
    "ENFORCE_VALUES",
    "EXPECTED",
    "FORBID_FORCE_DELETION",
    "KILL_TIMESTAMP",
    "MAX_TIMEOUT_SECONDS",
    "PENDING_TIMEOUT",
    "RUNNING_TIMEOUT",
    "SAFE_TO_FORCE_DELETE",
    "Invalid",
    "JobAnnotations",
    "forbids_force_deletion",
    "invalid_enforce",
    "job_annotations",
    "parse_enforce",
    "parse_flag",
    "parse_seconds",
    "parse_timestamp",
    "safe_to_force_delete",
]
