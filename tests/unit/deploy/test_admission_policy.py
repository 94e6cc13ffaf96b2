"""The ValidatingAdmissionPolicy in deploy/kubernetes/admission/ as a file: well
formed, installed by the base, and covering every annotation of
schemas/annotations.py with its rules, bounds and words.

What it does on a real API server, value by value against the parser, is
tests/integration/deploy/test_admission_policy.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.annotations import (
    _DIGITS,
    _RFC3339,
    ANNOTATION_PREFIX,
    BLANKS,
    EARLIEST,
    ENFORCE,
    ENFORCE_EXPECTED,
    ENFORCE_VALUES,
    EXPECTED,
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    LATEST,
    MAX_TIMEOUT_SECONDS,
    MAX_VALUE_LENGTH,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    SAFE_TO_FORCE_DELETE,
)

ROOT = Path(__file__).resolve().parents[3]
KUBERNETES = ROOT / "deploy" / "kubernetes"
ADMISSION = KUBERNETES / "admission"

Obj = dict[str, Any]


def _documents(path: Path) -> list[Obj]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def policy() -> Obj:
    (doc,) = _documents(ADMISSION / "policy.yaml")
    return doc


@pytest.fixture(scope="module")
def binding() -> Obj:
    (doc,) = _documents(ADMISSION / "binding.yaml")
    return doc


def _validations_about(policy: Obj, key: str) -> list[Obj]:
    """The validations whose expression reads ``key`` (directly or by a variable)."""
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}

    def reads(expression: str, seen: frozenset[str] = frozenset()) -> bool:
        if f"'{key}'" in expression:
            return True
        used = set(re.findall(r"variables\.(\w+)", expression)) - seen
        return any(reads(variables[name], seen | used) for name in used)

    return [v for v in policy["spec"]["validations"] if reads(v["expression"])]


# -- well formed -------------------------------------------------------------------------


def test_the_policy_and_its_binding_are_well_formed(policy: Obj, binding: Obj) -> None:
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    assert "paramKind" not in spec
    rules = {
        (group, version, resource, tuple(rule["operations"]))
        for rule in spec["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for version in rule["apiVersions"]
        for resource in rule["resources"]
    }
    assert rules == {
        ("batch", "v1", "jobs", ("CREATE", "UPDATE")),
        ("batch", "v1", "cronjobs", ("CREATE", "UPDATE")),
        ("", "v1", "pods", ("CREATE", "UPDATE")),
    }
    (condition,) = spec["matchConditions"]
    assert f"k.startsWith('{ANNOTATION_PREFIX}')" in condition["expression"]
    names = [v["name"] for v in spec["variables"]]
    assert len(names) == len(set(names))
    for validation in spec["validations"]:
        assert set(validation) == {"expression", "messageExpression", "reason"}
        assert validation["reason"] == "Invalid"
        for variable in re.findall(r"variables\.(\w+)", str(validation)):
            assert variable in names, variable
    # A variable may only use the ones defined before it.
    for i, variable in enumerate(spec["variables"]):
        for used in re.findall(r"variables\.(\w+)", variable["expression"]):
            assert used in names[:i], f"{variable['name']} uses {used}"

    assert binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"], "the default install covers every namespace"


def test_the_base_installs_it_and_so_does_every_overlay() -> None:
    (kustomization,) = _documents(ADMISSION / "kustomization.yaml")
    assert kustomization["resources"] == ["policy.yaml", "binding.yaml"]
    (base,) = _documents(KUBERNETES / "base" / "kustomization.yaml")
    assert "../admission" in base["resources"]
    # The namespace the base gives everything is taken off these cluster-scoped kinds.
    (transformer,) = (yaml.safe_load(t) for t in base["transformers"])
    assert transformer["target"] == {"group": "admissionregistration.k8s.io"}
    overlays = sorted((KUBERNETES / "overlays").glob("*/kustomization.yaml"))
    assert overlays
    for overlay in overlays:
        (doc,) = _documents(overlay)
        assert "../../base" in doc["resources"], overlay


# -- every annotation, with the parser's rules and words ---------------------------------


def test_every_annotation_is_checked_with_the_parsers_words(policy: Obj) -> None:
    assert set(EXPECTED) == {
        KILL_TIMESTAMP,
        PENDING_TIMEOUT,
        RUNNING_TIMEOUT,
        FORBID_FORCE_DELETION,
        SAFE_TO_FORCE_DELETE,
    }
    # Where each is read: the Job's annotations; forbid-force-deletion also on its
    # pods (annotation and label), safe-to-force-delete on its pods (annotation); and
    # the Job's enforce label.
    expected_count = {FORBID_FORCE_DELETION: 3, SAFE_TO_FORCE_DELETE: 2}
    for key, words in {**EXPECTED, ENFORCE: ENFORCE_EXPECTED}.items():
        validations = _validations_about(policy, key)
        assert len(validations) == expected_count.get(key, 1), key
        for validation in validations:
            message = validation["messageExpression"]
            assert message.startswith(f"'{key} ("), message
            assert f"'{words}'" in message, f"{key}: not the words of EXPECTED"
            assert "is not valid; expected" in message
            # Long values are cut in the message as Invalid.message() cuts them.
            assert f"size() <= {MAX_VALUE_LENGTH} ?" in message
            assert ".substring(0, 40) + '...'" in message
    keys = set(re.findall(r"'(jobreaper\.io/[a-z-]+)", "\n".join(_expressions(policy))))
    assert keys == {*EXPECTED, ENFORCE}, "a jobreaper.io/ key the parser does not know"


def _blanks_class() -> str:
    escapes = {" ": " ", "\t": r"\t", "\n": r"\n", "\r": r"\r", "\f": r"\f", "\v": r"\v"}
    return "[" + "".join(escapes[c] for c in BLANKS) + "]"


def _expressions(policy: Obj) -> list[str]:
    spec = policy["spec"]
    return [
        *(c["expression"] for c in spec["matchConditions"]),
        *(v["expression"] for v in spec["variables"]),
        *(v[k] for v in spec["validations"] for k in ("expression", "messageExpression")),
    ]


def test_the_policys_rules_are_the_parsers(policy: Obj) -> None:
    blanks = _blanks_class()
    inner: list[str] = []
    for expression in _expressions(policy):
        for subject, regex in re.findall(r"(variables\.\w+)\.matches\(r'([^']*)'\)", expression):
            # Every regex is guarded by the length bound, in the same expression.
            assert f"{subject}.size() <= {MAX_VALUE_LENGTH}" in expression, regex
            assert regex.startswith(f"^{blanks}*"), regex
            assert regex.endswith(f"{blanks}*$"), regex
            inner.append(regex[len(f"^{blanks}*") : -len(f"{blanks}*$")])
    assert "matches(" not in "".join(e.replace(".matches(r'", "") for e in _expressions(policy)), (
        "a regex not written as a raw string"
    )
    assert sorted(inner) == sorted(
        [
            f"(?:{_RFC3339.pattern})",  # kill-timestamp
            *[_DIGITS.pattern] * 2,  # the two timeouts
            *["(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])"] * 3,  # forbid: Job, pod, label
            *["(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])"] * 2,  # safe-to-force: Job, pod
            # enforce: the values the parser takes, ASCII letters in any case
            "(?:" + "|".join("".join(f"[{c.upper()}{c}]" for c in v) for v in ENFORCE_VALUES) + ")",
        ]
    )
    text = "\n".join(_expressions(policy))
    assert text.count(f"<= {MAX_TIMEOUT_SECONDS} : false") == 2
    epoch, second = datetime(1970, 1, 1, tzinfo=UTC), timedelta(seconds=1)
    first, last = (EARLIEST - epoch) // second, (LATEST - epoch) // second
    assert (first, last) == (0, 253402300799)
    assert f"tsEpochSeconds >= {first} && variables.tsEpochSeconds <= {last}" in text
