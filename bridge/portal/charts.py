"""The portal's chart of delivery outcomes over time: succeeded, failed and pending attempts
per hour of the last 24 hours or per day of the last 30, drawn server-side as SVG (no
script, no inline style: the page's Content-Security-Policy holds; colours are classes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape
from starlette.requests import Request

from bridge.core import Bridge
from bridge.errors import InvalidRequest
from bridge.models import OutcomeCounts, utcnow

SLOT = 10  # a bucket's width in the drawing's units (its height is 100)
SERIES = ("succeeded", "failed", "pending")  # stacked from the bottom, in this order


@dataclass(frozen=True)
class Range:
    key: str
    label: str
    width: timedelta  # of a bucket
    buckets: int

    def start(self, now: datetime) -> datetime:
        """The first bucket's start: whole hours (days, in UTC), the last one holding now."""
        if self.width >= timedelta(days=1):
            floor = now.replace(hour=0, minute=0, second=0, microsecond=0)
        else:
            floor = now.replace(minute=0, second=0, microsecond=0)
        return floor - self.width * (self.buckets - 1)

    def name(self, start: datetime) -> str:
        """A bucket as its tooltip names it."""
        if self.width >= timedelta(days=1):
            return f"{start:%Y-%m-%d} (UTC)"
        return f"{start:%Y-%m-%d %H:%M} to {start + self.width:%H:%M} UTC"

    def tick(self, start: datetime) -> str:
        return f"{start:%m-%d}" if self.width >= timedelta(days=1) else f"{start:%H:%M}"


RANGES = {
    "24h": Range("24h", "Last 24 hours", timedelta(hours=1), 24),
    "30d": Range("30d", "Last 30 days", timedelta(days=1), 30),
}


@dataclass(frozen=True)
class Chart:
    range: Range
    buckets: list[OutcomeCounts]
    svg: Markup

    def total(self, outcome: str) -> int:
        return sum(getattr(bucket, outcome) for bucket in self.buckets)


def chosen_range(request: Request) -> Range:
    key = request.query_params.get("range") or "24h"
    if key not in RANGES:
        raise InvalidRequest(f"range must be one of {', '.join(RANGES)}", field="range",
                             status_code=400)
    return RANGES[key]


async def outcomes_chart(bridge: Bridge, tenant: str, endpoint_id: str | None,
                         chosen: Range) -> Chart:
    """The chart of the tenant's attempts (or one endpoint's) over ``chosen``: one query."""
    buckets = await bridge.store.delivery_outcomes(
        tenant, endpoint_id=endpoint_id, start=chosen.start(utcnow()),
        width=chosen.width.total_seconds(), buckets=chosen.buckets)
    return Chart(chosen, buckets, draw(buckets, chosen))


def _nice(top: int) -> int:
    """A round number at or above ``top`` for the y axis (1, 2, 5, 10, 20, 50, ...)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= top:
                return step * factor
        step *= 10


def draw(buckets: list[OutcomeCounts], chosen: Range) -> Markup:
    """Stacked bars, one a bucket, each with a tooltip (``<title>``) giving its counts. The
    SVG stretches to the box (its units: 10 across a bucket, 100 high); the axes' labels
    are HTML beside and below it, so that text keeps its size on a phone and a desktop."""
    top = _nice(max((b.succeeded + b.failed + b.pending for b in buckets), default=0) or 1)
    totals = {name: sum(getattr(b, name) for b in buckets) for name in SERIES}
    summary = (f"Delivery attempts, {chosen.label.lower()}: {totals['succeeded']} succeeded, "
               f"{totals['failed']} failed, {totals['pending']} pending")
    svg = [f'<svg class="chart" viewBox="0 0 {SLOT * len(buckets)} 100" '
           f'preserveAspectRatio="none" role="img" aria-label="{escape(summary)}">']
    for level in (0, 50, 100):
        svg.append(f'<line class="grid" x1="0" x2="{SLOT * len(buckets)}" y1="{level}" '
                   f'y2="{level}" '
                   'vector-effect="non-scaling-stroke"/>')
    ticks = []
    every = max(len(buckets) // 6, 1)
    for index, bucket in enumerate(buckets):
        counts = {name: getattr(bucket, name) for name in SERIES}
        tip = (f"{chosen.name(bucket.start)}: {counts['succeeded']} succeeded, "
               f"{counts['failed']} failed, {counts['pending']} pending")
        svg.append(f'<g><title>{escape(tip)}</title><rect class="slot" x="{SLOT * index}" '
                   f'y="0" width="{SLOT}" height="100"/>')
        y = 100.0
        for name in SERIES:
            if counts[name]:
                height = 100 * counts[name] / top
                y -= height
                svg.append(f'<rect class="bar-{name}" x="{SLOT * index + 1.5}" y="{y:.2f}" '
                           f'width="{SLOT - 3}" height="{height:.2f}"/>')
        svg.append("</g>")
        label = escape(chosen.tick(bucket.start)) if index % every == 0 else ""
        ticks.append(f"<li>{label}</li>")
    svg.append("</svg>")
    half = f"{top / 2:g}" if top > 1 else ""
    return Markup(
        f'<div class="y-axis" aria-hidden="true"><span>{top}</span><span>{half}</span>'
        f'<span>0</span></div><div class="plot">{"".join(svg)}'
        f'<ol class="x-axis ticks-{len(buckets)}" aria-hidden="true">{"".join(ticks)}</ol>'
        "</div>")
