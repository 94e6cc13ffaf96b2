"""The ValidatingAdmissionPolicy of deploy/kubernetes/admission/ on the real local
API server (v1.34) agrees with schemas/annotations.py, value by value.

The policy and binding are taken from ``kustomize build`` of the base (what a
user installs), renamed for the test and bound to the test's namespace only (a
namespaceSelector on its name label), so that other tests on the same cluster
are not affected; both are deleted afterwards. Each value is sent as a
server-side dry-run create (admission runs on dry runs: checked against a real
create) and the API server's verdict must equal the parser's, with a message
that names the annotation, shows the value and says what is expected in the
words of ``EXPECTED``.

The verdicts are written to ``verdicts.tsv`` in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from kubernetes_asyncio import client

from schemas.annotations import (
    ENFORCE,
    ENFORCE_EXPECTED,
    EXPECTED,
    FORBID_FORCE_DELETION,
    KILL_TIMESTAMP,
    MAX_TIMEOUT_SECONDS,
    MAX_VALUE_LENGTH,
    PENDING_TIMEOUT,
    RUNNING_TIMEOUT,
    SAFE_TO_FORCE_DELETE,
    forbids_force_deletion,
    invalid_enforce,
    job_annotations,
    safe_to_force_delete,
)
from services.runtime.kube import KubeApiError, raw_request, request_json
from tests.integration.deploy.manifests import (
    BASE,
    Obj,
    apply,
    delete,
    find,
    kustomize_binary,
    object_path,
    render,
)
from tests.integration.helpers import IMAGE, eventually

pytestmark = pytest.mark.stack

POLICY = "jobreaper-annotations"
NOT_A_TIME = "next tuesday"

# -- the values --------------------------------------------------------------------------

TS = "2026-12-06T18:00:00.123456789+01:00"  # the longest valid form: 35 characters
assert len(TS) == 35

TABLE: list[str] = [
    # hostile
    "²",
    "١٢٣",
    "٢٠٢٦-12-06T18:00:00Z",
    "\uff13\uff10",  # fullwidth 30
    "1h",
    "-1",
    "+5",
    "1e3",
    "0x10",
    "1_000",
    "NaN",
    "",
    " ",
    "9" * 5000,
    "9" * 11,
    str(10**20),
    "yes",
    "on",
    "1",
    "TRUE\x00",
    "true" * 40,
    "fal\u017fe",  # long s: RE2's (?i)s would take it
    "\uff54rue",  # fullwidth t
    "0001-01-01T00:00:00+14:00",
    "0000-01-01T00:00:00Z",
    "2026-12-06T18:00:00",
    "2026-12-06 18:00:00Z",
    "2026-12-06t18:00:00z",
    "20261206T180000Z",
    "2026-12-06T18:00Z",
    "2026-12-06T18:00:00+0100",
    "2026-12-06T18:00:00+01",
    "2026-02-30T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "2100-02-29T00:00:00Z",
    "2026-04-31T00:00:00Z",
    "2026-00-10T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-12-00T00:00:00Z",
    "2026-12-06T24:00:00Z",
    "2026-12-06T18:60:00Z",
    "2026-12-06T18:00:60Z",
    "2026-12-06T18:00:00+24:00",
    "2026-12-06T18:00:00-23:60",
    "2026-12-06T18:00:00.Z",
    "2026-12-06T18:00:00.1234567891Z",
    "2026-12-06T18:00:00Z2",
    "x2026-12-06T18:00:00Z",
    "1969-12-31T23:59:59Z",
    "1969-12-31T23:59:59.999999999Z",
    "1970-01-01T00:59:59+01:00",
    "9999-12-31T23:59:59-00:01",
    "10000-01-01T00:00:00Z",
    # blanks: ASCII ones are taken, Unicode ones are not (on both sides)
    " 30 ",
    "\t30\r\n",
    "30\v\f",
    "\u00a030",
    "30\u3000",
    "\x1c30",
    "\x8530",
    " true ",
    "\u2003true",
    " 2026-12-06T19:00:00+01:00 ",
    "\n2026-12-06T18:00:00Z\t",
    "\u00a02026-12-06T18:00:00Z",
    # length: MAX_VALUE_LENGTH characters with blanks, then one more
    " " * (MAX_VALUE_LENGTH - len(TS)) + TS,
    " " * (MAX_VALUE_LENGTH - len(TS) + 1) + TS,
    " " * (MAX_VALUE_LENGTH - 2) + "30",
    " " * (MAX_VALUE_LENGTH - 1) + "30",
    " " * (MAX_VALUE_LENGTH - 4) + "TRUE",
    " " * (MAX_VALUE_LENGTH - 3) + "TRUE",
    # valid
    "0",
    "30",
    "0000000030",
    str(MAX_TIMEOUT_SECONDS),
    str(MAX_TIMEOUT_SECONDS + 1),
    "true",
    "TRUE",
    "tRuE",
    "false",
    "FALSE",
    "2026-12-06T18:00:00Z",
    "2026-12-06T19:00:00+01:00",
    "2026-12-06T18:00:00.5-00:30",
    "2026-12-06T18:00:00.123456789Z",
    TS,
    "2024-02-29T00:00:00Z",
    "2000-02-29T23:59:59Z",
    "2026-12-06T18:00:00+23:59",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:00:00-00:01",
    "1970-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999999Z",
    "9999-12-31T23:59:59+14:00",
]


def random_samples(seed: int = 20261206) -> dict[str, list[str]]:
    """Values near the accepted forms, about half of them valid (deterministic)."""
    rng = random.Random(seed)

    def pad(core: str) -> str:
        pads = ["", "", "", "", "", " ", "\t", "\r\n", "\v"]
        if rng.random() < 0.1:  # not blanks: Unicode spaces, a separator str.isspace() takes
            return rng.choice(["\u00a0", "\u3000", "\x1c", "\u2028"]) + core
        return rng.choice(pads) + core + rng.choice(pads)

    def stamp() -> list[object]:
        """[year, month, day, hour, minute, second, fraction, zone], often near an edge."""
        year = rng.choice([1969, 1970, 9999, rng.randrange(1, 10000), rng.randrange(1970, 2100)])
        edge = year in (1969, 1970, 9999) and rng.random() < 0.8
        month, day = ((12, 31) if year != 1970 else (1, 1)) if edge else (rng.randrange(1, 13), 0)
        day = day or rng.choice([rng.randrange(1, 29), 29, 30, 31])
        hour = (23 if year != 1970 else 0) if edge else rng.randrange(24)
        zone = "Z"
        if rng.random() < 0.7:
            minutes = rng.choice([0, 30, 59, rng.randrange(60)])
            zone = f"{rng.choice('+-')}{rng.randrange(24):02d}:{minutes:02d}"
        fraction = rng.choice(["", "", "", ".5", ".123456", ".123456789", ".999999999"])
        return [year, month, day, hour, rng.randrange(60), rng.randrange(60), fraction, zone]

    breaks = [  # (field, replacement): one of them spoils a stamp
        (1, 0), (1, 13), (2, 0), (2, 32), (3, 24), (4, 60), (5, 60), (6, "."),
        (6, ".1234567891"), (7, "+24:00"), (7, "-01:60"), (7, "z"), (7, "+0100"), (7, ""),
        (0, 0), (0, 10000),
    ]  # fmt: skip
    stamps = []
    for _ in range(160):
        fields = stamp()
        if rng.random() < 0.3:
            index, replacement = rng.choice(breaks)
            fields[index] = replacement
        year, month, day, hour, minute, second, fraction, zone = fields
        sep = "T" if rng.random() < 0.9 else rng.choice("t ")
        stamps.append(
            pad(
                f"{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
            )
        )
    seconds = []
    for _ in range(60):
        top = rng.choice(
            [10, 1000, 86400, MAX_TIMEOUT_SECONDS + 1, MAX_TIMEOUT_SECONDS * 2, 10**11]
        )
        core = str(rng.randrange(top)).zfill(rng.choice([0, 0, 0, 3, 10, 11]))
        if rng.random() < 0.2:
            core = rng.choice(["+", "-", "\u0663", "0x", "1."]) + core
        seconds.append(pad(core))
    seconds += [str(MAX_TIMEOUT_SECONDS - 1), "0" * 10, "0" * 9 + "1", "0" * 11]
    flags = []
    for _ in range(30):
        word = rng.choice(["true", "false", "true", "false", "ture", "fals"])
        cased = "".join(c.upper() if rng.random() < 0.5 else c for c in word)
        if rng.random() < 0.1:
            cased = cased.replace("s", "\u017f")
        flags.append(pad(cased))
    return {
        KILL_TIMESTAMP: stamps,
        PENDING_TIMEOUT: seconds,
        RUNNING_TIMEOUT: seconds,
        FORBID_FORCE_DELETION: flags,
        SAFE_TO_FORCE_DELETE: flags,
    }


# -- the objects -------------------------------------------------------------------------


def pod_spec() -> Obj:
    return {"restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE}]}


def job(
    annotations: dict[str, str] | None = None,
    *,
    name: str | None = None,
    pod_annotations: dict[str, str] | None = None,
    pod_labels: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> Obj:
    """A suspended Job (no pods are made)."""
    meta: Obj = {"name": name} if name else {"generateName": "adm-"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**meta, "annotations": annotations or {}, "labels": labels or {}},
        "spec": {
            "suspend": True,
            "template": {
                "metadata": {"annotations": pod_annotations or {}, "labels": pod_labels or {}},
                "spec": pod_spec(),
            },
        },
    }


def cronjob(
    annotations: dict[str, str] | None = None,
    *,
    job_template_annotations: dict[str, str] | None = None,
    job_template_labels: dict[str, str] | None = None,
    pod_labels: dict[str, str] | None = None,
) -> Obj:
    """A suspended CronJob; ``job_template_annotations`` are its Jobs' annotations."""
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"generateName": "adm-", "annotations": annotations or {}},
        "spec": {
            "schedule": "0 0 1 1 *",
            "suspend": True,
            "jobTemplate": {
                "metadata": {
                    "annotations": job_template_annotations or {},
                    "labels": job_template_labels or {},
                },
                "spec": {
                    "template": {"metadata": {"labels": pod_labels or {}}, "spec": pod_spec()}
                },
            },
        },
    }


def pod(annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "adm-",
            "annotations": annotations or {},
            "labels": labels or {},
        },
        "spec": pod_spec(),
    }


COLLECTIONS = {
    "Job": "/apis/batch/v1/namespaces/{}/jobs",
    "CronJob": "/apis/batch/v1/namespaces/{}/cronjobs",
    "Pod": "/api/v1/namespaces/{}/pods",
}


def collection(namespace: str, obj: Obj) -> str:
    return COLLECTIONS[obj["kind"]].format(namespace)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    message: str = ""


async def verdict(request: Awaitable[aiohttp.ClientResponse]) -> Verdict:
    """Accepted, or refused by a ValidatingAdmissionPolicy (anything else raises)."""
    try:
        response = await request
        response.release()
    except KubeApiError as exc:
        if exc.status == 422 and "ValidatingAdmissionPolicy" in exc.message:
            return Verdict(False, exc.message)
        raise
    return Verdict(True)


async def create(
    api: client.ApiClient, namespace: str, obj: Obj, *, dry_run: bool = True
) -> Verdict:
    query = [("dryRun", "All")] if dry_run else []
    return await verdict(
        raw_request(api, "POST", collection(namespace, obj), query=query, body=obj)
    )


async def merge_patch(api: client.ApiClient, namespace: str, name: str, patch: Obj) -> Verdict:
    return await verdict(
        raw_request(
            api,
            "PATCH",
            f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
            body=patch,
            content_type="application/merge-patch+json",
        )
    )


# -- the messages ------------------------------------------------------------------------

_CEL_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def cel_quote(value: str) -> str:
    """CEL's strings.quote (cel-go ext/strings.go)."""
    return '"' + "".join(_CEL_ESCAPES.get(c, c) for c in value) + '"'


def expected_message(key: str, where: str, value: str) -> str:
    shown = value if len(value) <= MAX_VALUE_LENGTH else value[:40] + "..."
    expected = ENFORCE_EXPECTED if key == ENFORCE else EXPECTED[key]
    return f"{key} ({where}): {cel_quote(shown)} is not valid; expected {expected}"


def assert_refused_for(result: Verdict, policy: str, key: str, where: str, value: str) -> None:
    assert not result.accepted, (key, where, value)
    prefix = f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}' denied request: "
    assert prefix in result.message, result.message
    assert expected_message(key, where, value) in result.message, result.message


# -- the policy in force in one namespace --------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> tuple[Obj, Obj]:
    """The policy and binding as ``kustomize build`` of the base renders them."""
    objects = render(kustomize_binary(), BASE)
    policy = find(objects, "ValidatingAdmissionPolicy", POLICY)
    binding = find(objects, "ValidatingAdmissionPolicyBinding", POLICY)
    for obj in (policy, binding):
        assert "namespace" not in obj["metadata"], "the base's namespace on a cluster-scoped kind"
    return policy, binding


async def _type_checked(api: client.ApiClient, policy: Obj) -> None:
    """The API server has type-checked the policy against Job, CronJob and Pod: no warning."""
    path = object_path(policy)

    async def checked() -> Obj | None:
        answer: Obj = orjson.loads(await request_json(api, "GET", path))
        status = answer.get("status") or {}
        done = status.get("observedGeneration") == answer["metadata"]["generation"]
        return status if done and "typeChecking" in status else None

    status = await eventually("the policy type-checked", checked, timeout=60)
    assert not status["typeChecking"].get("expressionWarnings"), status["typeChecking"]


@contextlib.asynccontextmanager
async def policy_in_force(
    api: client.ApiClient, shipped: tuple[Obj, Obj], namespace: str
) -> AsyncIterator[str]:
    """The shipped policy and binding, renamed and bound to ``namespace`` only, applied
    and in force (a known-bad Job refused); deleted afterwards. Yields the name."""
    name = f"{POLICY}-{namespace}"
    policy, binding = copy.deepcopy(shipped[0]), copy.deepcopy(shipped[1])
    policy["metadata"]["name"] = binding["metadata"]["name"] = name
    binding["spec"]["policyName"] = name
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    applied: list[Obj] = []
    try:
        for obj in (policy, binding):
            await apply(api, obj, dry_run=False)
            applied.append(obj)
        await _type_checked(api, policy)

        async def refused() -> bool:
            result = await create(api, namespace, job({KILL_TIMESTAMP: NOT_A_TIME}))
            return not result.accepted and f"'{name}'" in result.message

        await eventually("the policy in force", refused, timeout=60)
        yield name
    finally:
        for obj in reversed(applied):
            await delete(api, obj)


# -- the tests ---------------------------------------------------------------------------


def _parser_accepts_on_a_job(key: str, value: str) -> bool:
    return not job_annotations({key: value}).invalid


async def test_the_api_server_and_the_parser_agree_on_every_value(
    kube_api: client.ApiClient, shipped: tuple[Obj, Obj], namespace: str, tmp_path: Path
) -> None:
    # Without the policy the API server takes anything: what follows is the policy's.
    assert (await create(kube_api, namespace, job({KILL_TIMESTAMP: NOT_A_TIME}))).accepted
    samples = random_samples()
    cases = [(key, value) for key in EXPECTED for value in TABLE + samples[key]]
    limit = asyncio.Semaphore(4)

    async def judge(key: str, value: str) -> Verdict:
        async with limit:
            return await create(kube_api, namespace, job({key: value}))

    async with policy_in_force(kube_api, shipped, namespace) as name:
        verdicts = await asyncio.gather(*(judge(key, value) for key, value in cases))

    rows, disagreements = [], []
    for (key, value), result in zip(cases, verdicts, strict=True):
        parser = _parser_accepts_on_a_job(key, value)
        rows.append((key, value, parser, result.accepted))
        if parser != result.accepted:
            disagreements.append((key, value, parser, result.message))
        elif not result.accepted:
            assert_refused_for(result, name, key, "metadata.annotations", value)
    (tmp_path / "verdicts.tsv").write_text(
        "annotation\tvalue\tparser\tapi-server\n"
        + "".join(
            f"{k}\t{orjson.dumps(v[:70]).decode()}\t"
            f"{'valid' if p else 'invalid'}\t{'accepted' if a else 'refused'}\n"
            for k, v, p, a in rows
        )
    )
    assert not disagreements, disagreements
    # Both verdicts occur for every annotation (the table is not one-sided).
    for key in EXPECTED:
        assert {a for k, _, _, a in rows if k == key} == {True, False}, key


async def test_cronjobs_pods_and_pod_templates(
    kube_api: client.ApiClient, shipped: tuple[Obj, Obj], namespace: str
) -> None:
    api, ns = kube_api, namespace
    async with policy_in_force(api, shipped, ns) as name:
        # A dry run is judged as the real request is; the refused Job is not created.
        bad = job({KILL_TIMESTAMP: NOT_A_TIME}, name="refused-for-real")
        real = await create(api, ns, bad, dry_run=False)
        assert_refused_for(real, name, KILL_TIMESTAMP, "metadata.annotations", NOT_A_TIME)
        jobs = orjson.loads(await request_json(api, "GET", f"/apis/batch/v1/namespaces/{ns}/jobs"))
        assert jobs["items"] == []

        # CronJobs: the Job annotations of spec.jobTemplate, the labels of its pods.
        where = "spec.jobTemplate.metadata.annotations"
        for value in ("2026-02-30T00:00:00Z", "2026-12-06T18:00:00Z"):
            result = await create(
                api, ns, cronjob(job_template_annotations={KILL_TIMESTAMP: value})
            )
            if _parser_accepts_on_a_job(KILL_TIMESTAMP, value):
                assert result.accepted, result.message
            else:
                assert_refused_for(result, name, KILL_TIMESTAMP, where, value)
        result = await create(api, ns, cronjob(job_template_annotations={RUNNING_TIMEOUT: "1h"}))
        assert_refused_for(result, name, RUNNING_TIMEOUT, where, "1h")
        result = await create(api, ns, cronjob(pod_labels={FORBID_FORCE_DELETION: "yes"}))
        where = "spec.jobTemplate.spec.template.metadata.labels"
        assert_refused_for(result, name, FORBID_FORCE_DELETION, where, "yes")
        # The CronJob's own annotations reach no Job: jobreaper never reads them.
        assert (await create(api, ns, cronjob({KILL_TIMESTAMP: NOT_A_TIME}))).accepted

        # A Job's pod template: its pods would carry the value (and be refused).
        result = await create(api, ns, job(pod_annotations={FORBID_FORCE_DELETION: "nope"}))
        where = "spec.template.metadata.annotations"
        assert_refused_for(result, name, FORBID_FORCE_DELETION, where, "nope")

        # Pods: forbid-force-deletion as an annotation and as a label, like the parser.
        for annotation in ("yes", "TRUE", " false ", "fal\u017fe", "1", "\u00a0true"):
            result = await create(api, ns, pod({FORBID_FORCE_DELETION: annotation}))
            ok = not forbids_force_deletion({FORBID_FORCE_DELETION: annotation}, {})[1]
            if ok:
                assert result.accepted, (annotation, result.message)
            else:
                where = "metadata.annotations"
                assert_refused_for(result, name, FORBID_FORCE_DELETION, where, annotation)
        for label in ("yes", "TRUE", "false", "on", "False"):
            result = await create(api, ns, pod(labels={FORBID_FORCE_DELETION: label}))
            if not forbids_force_deletion({}, {FORBID_FORCE_DELETION: label})[1]:
                assert result.accepted, (label, result.message)
            else:
                assert_refused_for(result, name, FORBID_FORCE_DELETION, "metadata.labels", label)
        # Pods and pod templates: safe-to-force-delete as an annotation, like the parser.
        for annotation in ("yes", "TRUE", " false ", "tru\u0435", "1"):
            result = await create(api, ns, pod({SAFE_TO_FORCE_DELETE: annotation}))
            if safe_to_force_delete({SAFE_TO_FORCE_DELETE: annotation})[1] is None:
                assert result.accepted, (annotation, result.message)
            else:
                where = "metadata.annotations"
                assert_refused_for(result, name, SAFE_TO_FORCE_DELETE, where, annotation)
        result = await create(api, ns, job(pod_annotations={SAFE_TO_FORCE_DELETE: "yes"}))
        where = "spec.template.metadata.annotations"
        assert_refused_for(result, name, SAFE_TO_FORCE_DELETE, where, "yes")
        # The other annotations are Job annotations: a pod's are not read, nor checked.
        assert (await create(api, ns, pod({KILL_TIMESTAMP: NOT_A_TIME}))).accepted
        # No jobreaper key at all: not evaluated.
        assert (await create(api, ns, job({"example.com/kill-timestamp": "x"}))).accepted


async def test_updates_are_refused_only_for_the_values_they_set(
    kube_api: client.ApiClient, shipped: tuple[Obj, Obj], namespace: str
) -> None:
    """A Job written with an invalid value before the policy existed can still be
    updated (labels, finalizers: the controllers' writes) while it keeps that value;
    setting or changing a value is checked."""
    api, ns = kube_api, namespace
    before = await create(api, ns, job({KILL_TIMESTAMP: NOT_A_TIME}, name="old"), dry_run=False)
    assert before.accepted
    async with policy_in_force(api, shipped, ns) as name:
        assert (await merge_patch(api, ns, "old", {"metadata": {"labels": {"a": "b"}}})).accepted
        patch = {"metadata": {"annotations": {RUNNING_TIMEOUT: "30"}}}
        assert (await merge_patch(api, ns, "old", patch)).accepted
        for value, ok in (("tomorrow", False), ("2026-12-06T18:00:00Z", True), ("soon", False)):
            patch = {"metadata": {"annotations": {KILL_TIMESTAMP: value}}}
            result = await merge_patch(api, ns, "old", patch)
            if ok:
                assert result.accepted, result.message
            else:
                assert_refused_for(result, name, KILL_TIMESTAMP, "metadata.annotations", value)
        patch = {"metadata": {"annotations": {RUNNING_TIMEOUT: "-1"}}}
        assert_refused_for(
            await merge_patch(api, ns, "old", patch),
            name,
            RUNNING_TIMEOUT,
            "metadata.annotations",
            "-1",
        )
        # Removing a value is always possible.
        patch = {"metadata": {"annotations": {KILL_TIMESTAMP: None}}}
        assert (await merge_patch(api, ns, "old", patch)).accepted


# Label values the API server itself accepts (at most 63 characters of [A-Za-z0-9-_.],
# alphanumeric at both ends, or empty): only these reach the policy.
ENFORCE_VALUES = ["on", "ON", "On", "shadow", "SHADOW", "Shadow", "off", "OFF", "oFf", "",
                  "yes", "true", "1", "0", "onn", "of", "shadows", "enabled", "on_1", "on.off",
                  "o" * 63]  # fmt: skip


async def test_the_enforce_label_on_jobs_and_cronjob_templates(
    kube_api: client.ApiClient, shipped: tuple[Obj, Obj], namespace: str
) -> None:
    """``jobreaper.io/enforce`` where jobreaper reads it (a Job's labels, a CronJob's
    ``spec.jobTemplate.metadata.labels``): the API server refuses exactly the values
    the parser counts as absent; a value kept through an update is not checked again."""
    api, ns = kube_api, namespace
    before = await create(api, ns, job(labels={ENFORCE: "yes"}, name="old"), dry_run=False)
    assert before.accepted
    async with policy_in_force(api, shipped, ns) as name:
        verdicts = []
        for value in ENFORCE_VALUES:
            valid = invalid_enforce({ENFORCE: value}) is None
            for obj, where in (
                (job(labels={ENFORCE: value}), "metadata.labels"),
                (cronjob(job_template_labels={ENFORCE: value}), "spec.jobTemplate.metadata.labels"),
            ):
                result = await create(api, ns, obj)
                verdicts.append(result.accepted)
                if valid:
                    assert result.accepted, (value, where, result.message)
                else:
                    assert_refused_for(result, name, ENFORCE, where, value)
        assert set(verdicts) == {True, False}
        # The pod's own label is not read (the Job's is): not checked.
        assert (await create(api, ns, pod(labels={ENFORCE: "yes"}))).accepted
        # A Job that had an invalid value before the policy keeps it through updates...
        assert (await merge_patch(api, ns, "old", {"metadata": {"labels": {"a": "b"}}})).accepted
        # ... but setting a new value is checked, and removing it always passes.
        patch: Obj = {"metadata": {"labels": {ENFORCE: "maybe"}}}
        assert_refused_for(
            await merge_patch(api, ns, "old", patch), name, ENFORCE, "metadata.labels", "maybe"
        )
        assert (
            await merge_patch(api, ns, "old", {"metadata": {"labels": {ENFORCE: "on"}}})
        ).accepted
        assert (
            await merge_patch(api, ns, "old", {"metadata": {"labels": {ENFORCE: None}}})
        ).accepted
