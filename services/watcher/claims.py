"""The access modes of the PersistentVolumeClaims, for the pods that mount them.

The killer holds back the force deletion of a pod that mounts a ReadWriteOnce or
ReadWriteOncePod claim on a node that is not fenced (its processes may still write
there). The watcher knows the claims' access modes (it lists and watches
``persistentvolumeclaims``, publishing nothing about them) and puts them on each pod's
observation (``PodObserved.claims``): the killer needs no claim topic, and a claim's
access modes never change once it exists (the API server refuses the edit).

A pod whose claim the watcher has not seen gets the claim with no access modes, which
the killer reads as the worst case. Claims are listed before the pods (each cycle), and
a pod mounting a claim cannot be scheduled before the claim exists, so this is rare: a
claim created after its pod was last observed, which the pod's next change repairs.
This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.observations import VolumeClaim

from . import wire

Key = tuple[str, str]
"""(namespace, claim name)."""


def access_modes(claim: wire.PersistentVolumeClaim) -> tuple[str, ...]:
    """The modes of the bound volume (``status``), else those asked for (``spec``)."""
    return tuple(sorted(claim.status.access_modes or claim.spec.access_modes))


class ClaimModes:
    """Access modes by claim, kept from a list and the watch events after it."""

    def __init__(self) -> None:
        self.modes: dict[Key, tuple[str, ...]] = {}

    def on_list(self, namespace: str | None, items: Iterable[wire.PersistentVolumeClaim]) -> None:
        """A full list of ``namespace`` (None: all) replaces what was known there."""
        if namespace is None:
            self.modes.clear()
        else:
            for key in [key for key in self.modes if key[0] == namespace]:
                del self.modes[key]
        for c in items:
            self.modes[(c.metadata.namespace, c.metadata.name)] = access_modes(c)

    def on_event(self, event_type: str, claim: wire.PersistentVolumeClaim) -> None:
        key = (claim.metadata.namespace, claim.metadata.name)
        if event_type == "DELETED":
            self.modes.pop(key, None)
        else:
            self.modes[key] = access_modes(claim)

    def claims_of(self, pod: wire.Pod) -> tuple[VolumeClaim, ...]:
        """The claims ``pod`` mounts, with their access modes (empty: not seen)."""
        if not pod.spec.volumes:
            return ()
        namespace = pod.metadata.namespace
        out: list[VolumeClaim] = []
        for volume in pod.spec.volumes:
            if volume.persistent_volume_claim is not None:
                name = volume.persistent_volume_claim.claim_name
            elif volume.ephemeral is not None:
                name = f"{pod.metadata.name}-{volume.name}"
            else:
                continue
            modes = self.modes.get((namespace, name), ())
            out.append(VolumeClaim(name=name, access_modes=modes))
        return tuple(out)
