"""The chart of a deploy: the canary's and the stable's error rate and P95 over its time, as PNG.

Rendered with matplotlib's Agg backend (no display, no GUI toolkit), through its object API
(``Figure``) rather than ``pyplot``: nothing global is touched, so two deploys may draw at once.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from deployflow.providers.base import MetricHistory, Points

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CANARY_COLOUR = "#d62728"
STABLE_COLOUR = "#1f77b4"


@dataclass(frozen=True)
class Marker:
    """A moment drawn as a vertical line on the chart: a stage starting, the trigger."""

    at: datetime
    label: str
    alarm: bool = False


def _has_points(history: MetricHistory | None) -> bool:
    return history is not None and bool(history.error_rate or history.p95_seconds)


def _plot(axes: object, points: Points, scale: float, colour: str, label: str) -> None:
    if not points:
        return
    times = [datetime.fromtimestamp(t, UTC) for t, _ in points]
    values = [v * scale for _, v in points]
    axes.plot(times, values, color=colour, label=label, linewidth=1.6)  # type: ignore[attr-defined]


def render_chart(
    title: str,
    canary: MetricHistory | None,
    stable: MetricHistory | None,
    markers: Sequence[Marker] = (),
    *,
    canary_label: str = "canary",
    stable_label: str = "stable",
    error_rate_limit: float | None = None,
) -> bytes | None:
    """Two panels, error rate (%) above P95 (ms), canary in red and stable in blue, with the
    stages and the trigger marked. None when neither version has a point to draw."""
    if not (_has_points(canary) or _has_points(stable)):
        return None
    from matplotlib.dates import DateFormatter
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    errors_axes, latency_axes = figure.subplots(2, 1, sharex=True)
    for history, colour, label in (
        (canary, CANARY_COLOUR, canary_label),
        (stable, STABLE_COLOUR, stable_label),
    ):
        if history is None:
            continue
        _plot(errors_axes, history.error_rate, 100.0, colour, label)
        _plot(latency_axes, history.p95_seconds, 1000.0, colour, label)
    if error_rate_limit is not None:
        errors_axes.axhline(
            error_rate_limit * 100.0, color="grey", linestyle=":", linewidth=1, label="limit"
        )
    for marker in markers:
        for axes in (errors_axes, latency_axes):
            axes.axvline(
                marker.at,
                color=CANARY_COLOUR if marker.alarm else "grey",
                linestyle="--" if marker.alarm else ":",
                linewidth=1.2 if marker.alarm else 0.8,
            )
        errors_axes.annotate(
            marker.label,
            xy=(marker.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -2),
            textcoords="offset points",
            fontsize=7,
            va="top",
            color=CANARY_COLOUR if marker.alarm else "dimgrey",
        )
    errors_axes.set_title(title, fontsize=10)
    errors_axes.set_ylabel("error rate (%)")
    errors_axes.legend(loc="best", fontsize=8)
    latency_axes.set_ylabel("P95 (ms)")
    for axes in (errors_axes, latency_axes):
        # From zero, with room above the highest line for the markers' labels.
        axes.set_ylim(0, max(axes.get_ylim()[1], 1e-3) * 1.2)
    latency_axes.set_xlabel("time (UTC)")
    latency_axes.xaxis.set_major_formatter(DateFormatter("%H:%M:%S", tz=UTC))  # type: ignore[no-untyped-call]
    for axes in (errors_axes, latency_axes):
        axes.grid(True, alpha=0.3)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def data_uri(png: bytes) -> str:
    """The PNG as a ``data:`` URI, for markdown that must carry its image inside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG from its header.

    Raises:
        ValueError: The bytes are not a PNG.
    """
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
