"""Validation of a configuration document before anything is published.

Pure (no I/O): a JSON text or an already-parsed value in, a
:class:`Report` out. Every problem is reported at once, each with the JSON
path of the value at fault, so an operator fixes a bad edit in one go:

- syntax: not JSON, or a key given twice in one object;
- types: a number of seconds that is a string, a float, a boolean or null;
  a ``killMethod`` that is not a string; an object where a list is wanted;
- ranges: no negatives, at most :data:`MAX_SECONDS` (7 days);
- unknown keys, with a "did you mean" (difflib, and case / ``_`` / ``-``
  insensitive), and values of ``killMethod`` likewise;
- both names of the force-deletion timeout (``forceDeleteTaskTimeoutSeconds``
  and its old name ``forceDeleteKillingTasksTimeoutSeconds``) in one object;
- overrides: namespace names must be DNS-1123 labels; each selector needs a
  non-empty ``matchLabels`` of valid label keys and values, and ``settings``.

Warnings do not block: the old alias name, an override that sets nothing,
two selectors with the same labels. Once the walk finds nothing, the model
(:class:`schemas.config.KillerConfig`) validates the document as a last
safety net; whatever it still refuses is reported as an error too.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from pydantic import ValidationError

from schemas.config import (
    ENFORCE_ALIAS,
    FORCE_DELETE_ALIAS,
    FORCE_DELETE_ALIAS_OLD,
    Enforce,
    ForceDeletePolicy,
    KillerConfig,
    KillMethod,
)

MAX_SECONDS = 7 * 24 * 3600
"""The longest timeout accepted (7 days): anything longer is almost surely a typo
(milliseconds for seconds) and would leave a stuck pod alone for a week."""

KILL_METHODS: tuple[str, ...] = get_args(KillMethod)
ENFORCE_VALUES: tuple[str, ...] = get_args(Enforce)
FORCE_POLICY_ALIAS = "forceDeletePolicy"
FORCE_POLICY_VALUES: tuple[str, ...] = get_args(ForceDeletePolicy)
FENCE_AFTER_ALIAS = "fenceUnreachableAfterSeconds"
FORCE_RATE_ALIAS = "maxForceDeletionsPerSecondPerPartition"
MAX_FORCE_RATE = 100_000
"""The largest rate limit accepted; 0 means no limit."""
GUARD_WINDOW_ALIAS = "massDisruptionWindowSeconds"
GUARD_MIN_NODES_ALIAS = "massDisruptionMinNodes"
GUARD_FRACTION_ALIAS = "massDisruptionFraction"
MAX_GUARD_NODES = 100_000
"""The largest ``massDisruptionMinNodes`` accepted (more than any cluster has nodes)."""
GLOBAL_KEYS: tuple[str, ...] = (
    FENCE_AFTER_ALIAS,
    FORCE_RATE_ALIAS,
    GUARD_WINDOW_ALIAS,
    GUARD_MIN_NODES_ALIAS,
    GUARD_FRACTION_ALIAS,
)
"""Cluster-wide keys: only at the top level, no override sets them."""
SECONDS_KEYS: tuple[str, ...] = (
    "deleteKillingTasksTimeoutSeconds",
    FORCE_DELETE_ALIAS,
    FORCE_DELETE_ALIAS_OLD,
    "defaultPendingTimeoutSeconds",
    "deleteOnNodeLostAfterSeconds",
)
SETTING_KEYS: tuple[str, ...] = ("killMethod", ENFORCE_ALIAS, *SECONDS_KEYS, FORCE_POLICY_ALIAS)
TOP_KEYS: tuple[str, ...] = (*SETTING_KEYS, *GLOBAL_KEYS, "overrides")
OVERRIDE_KEYS: tuple[str, ...] = ("namespaces", "selectors")
SELECTOR_KEYS: tuple[str, ...] = ("matchLabels", "settings")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Code = Literal[
    "syntax",
    "duplicate_key",
    "type",
    "range",
    "enum",
    "unknown_key",
    "alias_conflict",
    "required",
    "namespace",
    "label_key",
    "label_value",
    "deprecated",
    "empty",
    "duplicate_selector",
    "model",
]
PathPart = str | int


def render_path(path: Sequence[PathPart]) -> str:
    """A JSONPath: ``$.overrides.selectors[0].matchLabels['app.kubernetes.io/name']``."""
    out = ["$"]
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(f".{part}")
        else:
            escaped = part.replace("\\", "\\\\").replace("'", "\\'")
            out.append(f"['{escaped}']")
    return "".join(out)


@dataclass(frozen=True)
class Issue:
    """One problem (or warning) at one JSON path."""

    path: str
    code: Code
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def as_json(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Report:
    """The verdict on one document: a config when there are no errors."""

    config: KillerConfig | None
    errors: tuple[Issue, ...] = ()
    warnings: tuple[Issue, ...] = ()

    @property
    def ok(self) -> bool:
        return self.config is not None and not self.errors

    def summary(self, limit: int = 5) -> str:
        """One line for logs, Events and HTTP errors: the count and the first problems."""
        if self.ok:
            return "valid"
        shown = "; ".join(str(issue) for issue in self.errors[:limit])
        more = f"; and {len(self.errors) - limit} more" if len(self.errors) > limit else ""
        noun = "problem" if len(self.errors) == 1 else "problems"
        return f"{len(self.errors)} {noun}: {shown}{more}"


class _Object(dict[str, Any]):
    """A parsed JSON object that remembers the keys it was given more than once."""

    duplicates: tuple[str, ...] = ()


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    seen: list[str] = []
    for key, value in pairs:
        if key in obj and key not in seen:
            seen.append(key)
        obj[key] = value
    obj.duplicates = tuple(seen)
    return obj


def parse_json(text: str | bytes) -> tuple[Any, Issue | None]:
    """The parsed document, or a syntax issue (with line and column)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, Issue("$", "syntax", f"not UTF-8 text: {exc}")
    if not text.strip():
        return None, Issue("$", "syntax", "empty document; give {} for the built-in defaults")
    try:
        return json.loads(text, object_pairs_hook=_object_pairs), None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        return None, Issue("$", "syntax", f"not valid JSON at {where}: {exc.msg}")


def validate_text(text: str | bytes) -> Report:
    """Parse and validate a JSON document."""
    document, problem = parse_json(text)
    if problem is not None:
        return Report(None, (problem,))
    return validate_document(document)


def validate_document(document: Any) -> Report:
    """Validate an already-parsed document (a JSON object)."""
    walk = _Walk()
    walk.top(document)
    if walk.errors:
        return Report(None, tuple(walk.errors), tuple(walk.warnings))
    try:
        config = KillerConfig.model_validate(document)
    except ValidationError as exc:  # the walk should have caught it: report, never crash
        errors = tuple(
            Issue(
                render_path([p for p in err["loc"] if isinstance(p, str | int)]),
                "model",
                err["msg"],
            )
            for err in exc.errors()
        )
        return Report(None, errors, tuple(walk.warnings))
    return Report(config, (), tuple(walk.warnings))


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to a mistyped ``word``, if any is close."""
    options = list(candidates)

    def squash(s: str) -> str:
        return re.sub(r"[-_\s.]", "", s).lower()

    for option in options:
        if squash(option) == squash(word):
            return option
    lowered = {option.lower(): option for option in options}
    close = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def _quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a fractional number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass
class _Walk:
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)

    def error(self, path: Sequence[PathPart], code: Code, message: str) -> None:
        self.errors.append(Issue(render_path(path), code, message))

    def warn(self, path: Sequence[PathPart], code: Code, message: str) -> None:
        self.warnings.append(Issue(render_path(path), code, message))

    # -- objects and keys --------------------------------------------------------

    def obj(self, value: Any, path: list[PathPart], what: str) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.error(path, "type", f"{what} must be an object, got {_kind(value)}")
            return None
        for key in getattr(value, "duplicates", ()):
            self.error([*path, key], "duplicate_key", f"key {_quote(key)} is given more than once")
        return value

    def unknown(
        self, key: str, path: list[PathPart], allowed: Sequence[str], hint: str = ""
    ) -> None:
        message = f"unknown key {_quote(key)}"
        guess = suggest(key, allowed)
        if hint:
            message += f"; {hint}"
        elif guess is not None:
            message += f"; did you mean {_quote(guess)}?"
        else:
            message += f"; expected one of {', '.join(allowed)}"
        self.error([*path, key], "unknown_key", message)

    # -- the document ------------------------------------------------------------

    def top(self, document: Any) -> None:
        body = self.obj(document, [], "the configuration")
        if body is None:
            return
        for key, value in body.items():
            if key in SETTING_KEYS:
                self.setting(key, value, [key])
            elif key == FENCE_AFTER_ALIAS:
                self.seconds(value, [key])
            elif key == FORCE_RATE_ALIAS:
                self.rate(value, [key])
            elif key == GUARD_WINDOW_ALIAS:
                self.seconds(value, [key])
            elif key == GUARD_MIN_NODES_ALIAS:
                self.min_nodes(value, [key])
            elif key == GUARD_FRACTION_ALIAS:
                self.fraction(value, [key])
            elif key == "overrides":
                self.overrides(value, ["overrides"])
            elif key in OVERRIDE_KEYS:
                self.unknown(key, [], TOP_KEYS, f"{key} belongs under overrides: overrides.{key}")
            else:
                self.unknown(key, [], TOP_KEYS)
        self.aliases(body, [])

    def settings(self, value: Any, path: list[PathPart], what: str) -> None:
        """An override's settings: the same keys as the top level, all optional."""
        body = self.obj(value, path, what)
        if body is None:
            return
        if not body:
            self.warn(path, "empty", f"{what} sets nothing (it can be removed)")
        for key, item in body.items():
            if key in SETTING_KEYS:
                self.setting(key, item, [*path, key])
            elif key == "overrides" or key in OVERRIDE_KEYS:
                self.unknown(key, path, SETTING_KEYS, "overrides do not nest")
            elif key in GLOBAL_KEYS:
                self.unknown(key, path, SETTING_KEYS, "it is cluster-wide: set it at the top level")
            else:
                self.unknown(key, path, SETTING_KEYS)
        self.aliases(body, path)

    def aliases(self, body: dict[str, Any], path: list[PathPart]) -> None:
        if FORCE_DELETE_ALIAS in body and FORCE_DELETE_ALIAS_OLD in body:
            self.error(
                [*path, FORCE_DELETE_ALIAS_OLD],
                "alias_conflict",
                f"{FORCE_DELETE_ALIAS} and its old name {FORCE_DELETE_ALIAS_OLD} are both "
                f"given; keep only {FORCE_DELETE_ALIAS}",
            )
        elif FORCE_DELETE_ALIAS_OLD in body:
            self.warn(
                [*path, FORCE_DELETE_ALIAS_OLD],
                "deprecated",
                f"{FORCE_DELETE_ALIAS_OLD} is the old name of {FORCE_DELETE_ALIAS}",
            )

    def setting(self, key: str, value: Any, path: list[PathPart]) -> None:
        if key == "killMethod":
            self.choice(value, path, KILL_METHODS)
        elif key == ENFORCE_ALIAS:
            self.choice(value, path, ENFORCE_VALUES)
        elif key == FORCE_POLICY_ALIAS:
            self.choice(value, path, FORCE_POLICY_VALUES)
        else:
            self.seconds(value, path)

    def choice(self, value: Any, path: list[PathPart], choices: tuple[str, ...]) -> None:
        allowed = " or ".join(_quote(m) for m in choices)
        if not isinstance(value, str):
            self.error(path, "type", f"must be {allowed}, got {_kind(value)}")
        elif value not in choices:
            guess = suggest(value, choices)
            hint = f"; did you mean {_quote(guess)}?" if guess else ""
            self.error(path, "enum", f"must be {allowed}, got {_quote(value)}{hint}")

    def seconds(self, value: Any, path: list[PathPart]) -> None:
        if value is None:
            self.error(path, "type", "must be a whole number of seconds, got null (omit the key)")
        elif isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                hint = f" (write it without quotes: {value.strip()})"
            elif isinstance(value, float) and value.is_integer():
                hint = f" (write {int(value)})"
            self.error(path, "type", f"must be a whole number of seconds, got {_kind(value)}{hint}")
        elif value < 0:
            self.error(path, "range", f"must not be negative, got {value} (0 disables)")
        elif value > MAX_SECONDS:
            self.error(
                path,
                "range",
                f"must be at most {MAX_SECONDS} (7 days), got {value}"
                + (" (milliseconds instead of seconds?)" if value >= 1000 * 60 else ""),
            )

    def rate(self, value: Any, path: list[PathPart]) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, "type", f"must be a whole number per second, got {_kind(value)}")
        elif value < 0:
            self.error(path, "range", f"must not be negative, got {value} (0: no limit)")
        elif value > MAX_FORCE_RATE:
            self.error(
                path, "range", f"must be at most {MAX_FORCE_RATE} (0: no limit), got {value}"
            )

    def min_nodes(self, value: Any, path: list[PathPart]) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, "type", f"must be a whole number of nodes, got {_kind(value)}")
        elif value < 1:
            self.error(
                path,
                "range",
                f"must be at least 1, got {value} (turn the guard off with "
                f"{GUARD_WINDOW_ALIAS}: 0)",
            )
        elif value > MAX_GUARD_NODES:
            self.error(path, "range", f"must be at most {MAX_GUARD_NODES}, got {value}")

    def fraction(self, value: Any, path: list[PathPart]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, "type", f"must be a number in (0, 1], got {_kind(value)}")
        elif not 0 < value <= 1:
            hint = " (a fraction, not a percentage: 0.55 for 55 %)" if 1 < value <= 100 else ""
            self.error(path, "range", f"must be more than 0 and at most 1, got {value}{hint}")

    # -- overrides ----------------------------------------------------------------

    def overrides(self, value: Any, path: list[PathPart]) -> None:
        body = self.obj(value, path, "overrides")
        if body is None:
            return
        for key, item in body.items():
            if key == "namespaces":
                self.namespaces(item, [*path, key])
            elif key == "selectors":
                self.selectors(item, [*path, key])
            else:
                self.unknown(key, path, OVERRIDE_KEYS)

    def namespaces(self, value: Any, path: list[PathPart]) -> None:
        body = self.obj(value, path, "overrides.namespaces (namespace name -> settings)")
        if body is None:
            return
        for name, settings in body.items():
            if len(name) > 63 or not _DNS_LABEL.match(name):
                self.error(
                    [*path, name],
                    "namespace",
                    f"{_quote(name)} is not a valid namespace name: at most 63 lowercase "
                    "letters, digits and '-', starting and ending with a letter or digit",
                )
            self.settings(settings, [*path, name], f"the override of namespace {name}")

    def selectors(self, value: Any, path: list[PathPart]) -> None:
        if not isinstance(value, list):
            self.error(
                path,
                "type",
                f"must be a list of {{matchLabels, settings}} objects, got {_kind(value)}",
            )
            return
        seen: dict[tuple[tuple[str, str], ...], int] = {}
        for index, item in enumerate(value):
            labels = self.selector(item, [*path, index])
            if labels is None:
                continue
            key = tuple(sorted(labels.items()))
            if key in seen:
                self.warn(
                    [*path, index],
                    "duplicate_selector",
                    f"same matchLabels as selectors[{seen[key]}]; this later one wins",
                )
            else:
                seen[key] = index

    def selector(self, value: Any, path: list[PathPart]) -> dict[str, str] | None:
        body = self.obj(value, path, "a selector override")
        if body is None:
            return None
        labels: dict[str, str] | None = None
        for key, item in body.items():
            if key == "matchLabels":
                labels = self.match_labels(item, [*path, key])
            elif key == "settings":
                self.settings(item, [*path, key], "a selector's settings")
            elif key == "matchExpressions":
                self.unknown(key, path, SELECTOR_KEYS, "only matchLabels is supported")
            elif key in SETTING_KEYS:
                self.unknown(key, path, SELECTOR_KEYS, f"put it under settings: settings.{key}")
            else:
                self.unknown(key, path, SELECTOR_KEYS)
        for required in SELECTOR_KEYS:
            if required not in body:
                self.error([*path, required], "required", f"{required} is required")
        return labels

    def match_labels(self, value: Any, path: list[PathPart]) -> dict[str, str] | None:
        if isinstance(value, str):
            self.error(
                path,
                "type",
                f'must be an object of label: value, e.g. {{"tier": "critical"}}, '
                f"got the string {_quote(value)}",
            )
            return None
        body = self.obj(value, path, "matchLabels")
        if body is None:
            return None
        if not body:
            self.error(
                path,
                "required",
                "must name at least one label (an empty one would "
                "match every Job; use the top-level keys for that)",
            )
            return None
        good: dict[str, str] = {}
        for key, item in body.items():
            key_ok = self.label_key(key, [*path, key])
            value_ok = self.label_value(item, [*path, key])
            if key_ok and value_ok:
                good[key] = item
        return good if len(good) == len(body) else None

    def label_key(self, key: str, path: list[PathPart]) -> bool:
        prefix, slash, name = key.rpartition("/")
        problems: list[str] = []
        if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
            problems.append(
                f"prefix {_quote(prefix)} must be a DNS subdomain (lowercase, dots, at most 253)"
            )
        if not name or len(name) > 63 or not _LABEL_NAME.match(name):
            problems.append(
                f"name {_quote(name)} must be at most 63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit"
            )
        if problems:
            self.error(path, "label_key", f"invalid label key {_quote(key)}: {'; '.join(problems)}")
        return not problems

    def label_value(self, value: Any, path: list[PathPart]) -> bool:
        if not isinstance(value, str):
            hint = f" (quote it: {_quote(str(value).lower())})" if isinstance(value, int) else ""
            self.error(path, "label_value", f"label values are strings, got {_kind(value)}{hint}")
            return False
        if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
            self.error(
                path,
                "label_value",
                f"invalid label value {_quote(value)}: at most 63 letters, digits, '-', '_' or "
                "'.', starting and ending with a letter or digit (or empty)",
            )
            return False
        return True
