"""``audit --out FILE.svg|FILE.html``: the timeline as a picture, self-contained
(no script, no font or stylesheet fetched), so it can be attached to a ticket.

One lane per pod plus one for the Job. On a pod's lane: a bar while the pod
existed (hatched once its deletion was requested), and per ladder step a hollow
ring at ``due_at``, a line to a dot at ``applied_at`` coloured by outcome.
Kill requests and kill events are vertical rules across all lanes. Every mark
has a ``<title>`` (the tooltip) with the full entry.
"""

from __future__ import annotations

import html
from datetime import datetime

from .timeline import Timeline

LANE_H = 46
LEFT = 190
RIGHT = 40
TOP = 64
WIDTH = 1200
OUTCOME_COLOUR = {
    "applied": "#2e7d32",
    "gone": "#558b2f",
    "uid-mismatch": "#6d4c41",
    "forbidden": "#c62828",
    "failed": "#e65100",
    "refused": "#ad1457",
    "would-apply": "#9e9e9e",
}
STEP_COLOUR = {"set-active-deadline": "#1565c0", "delete": "#6a1b9a", "force-delete": "#b71c1c"}


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _ticks(span: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200):
        if span / step <= 10:
            return step
    return 3600 * 6


def render_svg(timeline: Timeline) -> str:
    t = timeline
    start = t.start
    span = max((t.end - start).total_seconds(), 1.0) * 1.04
    plot_w = WIDTH - LEFT - RIGHT

    def x(at: datetime) -> float:
        return round(LEFT + (at - start).total_seconds() / span * plot_w, 2)

    lanes = ["job", *[p.uid for p in t.pods]]
    lane_y = {key: TOP + i * LANE_H + LANE_H / 2 for i, key in enumerate(lanes)}
    height = TOP + len(lanes) * LANE_H + 70
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{_e(f'kill timeline of {t.namespace}/{t.job} (uid {t.uid})')}</title>",
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffcdd2"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#e57373" stroke-width="3"/></pattern></defs>',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="12" y="22" font-size="15" font-weight="bold">'
        f"{_e(f'{t.namespace}/{t.job}')}</text>",
        f'<text x="12" y="40" fill="#555">{_e(f"uid {t.uid}, from {_stamp(start)} UTC")}</text>',
    ]
    # time axis
    axis_y = TOP + len(lanes) * LANE_H + 8
    tick = _ticks(span)
    n = 0
    while n * tick <= span:
        tx = round(LEFT + n * tick / span * plot_w, 2)
        out.append(f'<line x1="{tx}" y1="{TOP}" x2="{tx}" y2="{axis_y}" stroke="#eee"/>')
        out.append(
            f'<text x="{tx}" y="{axis_y + 14}" text-anchor="middle" fill="#555">'
            f"+{n * tick:g}s</text>"
        )
        n += 1
    # lanes
    for key, y in lane_y.items():
        label = "Job" if key == "job" else next(p.name for p in t.pods if p.uid == key)
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{WIDTH - RIGHT}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4}" text-anchor="end">{_e(label[-26:])}</text>')
    for p in t.pods:
        y = lane_y[p.uid]
        begin = p.first_seen
        end = p.gone_at or t.end
        cut = p.deleting_since if p.deleting_since and p.deleting_since < end else None
        tip = _e(f"{p.name} on {p.node or '?'}: {p.phase}, ended {p.ended or '?'}")
        solid_end = cut or end
        out.append(
            f'<rect x="{x(begin)}" y="{y - 7}" width="{max(x(solid_end) - x(begin), 1)}" '
            f'height="14" fill="#bbdefb"><title>{tip}</title></rect>'
        )
        if cut is not None:
            out.append(
                f'<rect x="{x(cut)}" y="{y - 7}" width="{max(x(end) - x(cut), 1)}" height="14" '
                f'fill="url(#hatch)"><title>being deleted from {_stamp(cut)}</title></rect>'
            )
        if p.ended:
            out.append(f'<text x="{x(end) + 4}" y="{y + 4}" fill="#333">{_e(p.ended)}</text>')
    for s in t.steps:
        y = lane_y.get(s.pod_uid, lane_y["job"])
        colour = STEP_COLOUR.get(s.step, "#333")
        tip = f"{s.step} #{s.attempt} ({s.rule}, {s.trigger}) due {_stamp(s.due_at)}"
        if s.result is not None:
            r = s.result
            tip += f"; {r.outcome} HTTP {r.http_status} at {_stamp(r.applied_at)}"
            tip += f", +{s.apply_latency_s:.3f}s after due"
            done = OUTCOME_COLOUR.get(r.outcome, "#333")
            out.append(
                f'<line x1="{x(s.due_at)}" y1="{y - 14}" x2="{x(r.applied_at)}" y2="{y - 14}" '
                f'stroke="{colour}" stroke-width="2"/>'
            )
            out.append(
                f'<circle cx="{x(r.applied_at)}" cy="{y - 14}" r="5" fill="{done}">'
                f"<title>{_e(tip)}</title></circle>"
            )
        out.append(
            f'<circle cx="{x(s.due_at)}" cy="{y - 14}" r="5" fill="white" stroke="{colour}" '
            f'stroke-width="2"><title>{_e(tip)}</title></circle>'
        )
        out.append(
            f'<text x="{x(s.due_at)}" y="{y + 20}" font-size="10" fill="{colour}">'
            f"{_e(s.step)}</text>"
        )
    for e in t.entries:
        if e.kind == "job":  # the Job's own changes: a small diamond on its lane
            jx, jy = x(e.at), lane_y["job"]
            out.append(
                f'<path d="M{jx} {jy - 5} l5 5 l-5 5 l-5 -5 z" fill="#757575">'
                f"<title>{_e(f'{_stamp(e.at)} {e.text}')}</title></path>"
            )
            if "kill-timestamp" in e.text:  # the rest is in the tooltips
                out.append(
                    f'<text x="{jx - 4}" y="{jy + 18}" font-size="10" text-anchor="end" '
                    'fill="#616161">kill-timestamp set</text>'
                )
    for e in t.entries:
        if e.kind not in ("request", "event") or e.text.startswith("KillStep"):
            continue
        colour = "#ad1457" if e.kind == "request" else "#0d47a1"
        if e.text.startswith("ForceDeletionForbidden"):
            colour = "#c62828"
        elif e.text.startswith("ForceDeletionHeld"):
            colour = "#ef6c00"
        ex = x(e.at)
        out.append(
            f'<line x1="{ex}" y1="{TOP - 6}" x2="{ex}" y2="{axis_y}" stroke="{colour}" '
            f'stroke-dasharray="4 3"><title>{_e(e.text)}</title></line>'
        )
        out.append(
            f'<text x="{ex + 3}" y="{TOP - 8}" font-size="10" fill="{colour}">'
            f"{_e(e.text.split(':')[0].split(' (')[0])}</text>"
        )
    legend_y = axis_y + 40
    legend = [("due (ring)", "white", "#333"), *[(k, v, v) for k, v in OUTCOME_COLOUR.items()]]
    lx = LEFT
    for label, fill, stroke in legend:
        out.append(
            f'<circle cx="{lx}" cy="{legend_y}" r="5" fill="{fill}" stroke="{stroke}" '
            'stroke-width="2"/>'
        )
        out.append(f'<text x="{lx + 9}" y="{legend_y + 4}">{_e(label)}</text>')
        lx += 110
    out.append(f'<rect x="{lx - 5}" y="{legend_y - 6}" width="24" height="12" fill="#bbdefb"/>')
    out.append(f'<text x="{lx + 24}" y="{legend_y + 4}">pod exists</text>')
    lx += 100
    out.append(f'<rect x="{lx - 5}" y="{legend_y - 6}" width="24" height="12" fill="url(#hatch)"/>')
    out.append(f'<text x="{lx + 24}" y="{legend_y + 4}">being deleted</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(timeline: Timeline) -> str:
    """The SVG with the entries as a table below it, in one HTML file."""
    t = timeline
    rows = "\n".join(
        f"<tr><td>{_stamp(e.at)}</td><td>{(e.at - t.start).total_seconds():.3f}</td>"
        f"<td>{_e(e.kind)}</td><td>{_e(e.pod or '')}</td><td>{_e(e.text)}</td>"
        f"<td><code>{_e(e.source)}</code></td></tr>"
        for e in t.entries
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{_e(f'{t.namespace}/{t.job} kill timeline')}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;"
        "font-size:12px}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}"
        "</style></head><body>\n"
        f"{render_svg(t)}"
        "<table><tr><th>time (UTC)</th><th>+s</th><th>what</th><th>pod</th><th></th>"
        f"<th>record</th></tr>\n{rows}\n</table>\n</body></html>\n"
    )
