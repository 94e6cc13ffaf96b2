"""``jobreaper audit`` and ``jobreaper events``: one Job's kill history read back from
the topics, and the live tail of the public kill events.

The entry points other code may call (``jobreaper-dev demo`` does)::

    timeline = await load_timeline(kafka, namespace, job, uid=None)
    render_terminal(timeline, console)
    render_svg(timeline)  # the picture (``jobreaper-dev demo --picture``)
"""

from __future__ import annotations

from .history import JobNotFound, load_timeline
from .picture import render_svg
from .terminal import render_terminal
from .timeline import Timeline

__all__ = ["JobNotFound", "Timeline", "load_timeline", "render_svg", "render_terminal"]
