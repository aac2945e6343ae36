"""The earnings bar chart, drawn on the server as SVG (pure): no script, nothing for the CSP
to allow, and the same picture printed or offline. Colours come from app.css classes, so the
chart follows the light and dark schemes; the page shows the same figures in a table for
screen readers (the SVG is one ``role="img"`` with a label)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from markupsafe import Markup, escape

WIDTH = 320
HEIGHT = 160
#: Room under the bars for the week labels.
LABEL_H = 18
GAP = 6


def bar_chart(
    weeks: list[tuple[date, int]],
    *,
    label: str,
    week_label: Callable[[date], str],
    amount: Callable[[int], str],
) -> Markup:
    """One bar per week, scaled to the best week (a negative week — a dispute took back
    more than was earned — draws no bar); each bar carries its figure as a tooltip."""
    top = max((paise for _, paise in weeks), default=0)
    slot = WIDTH // max(len(weeks), 1)
    plot_h = HEIGHT - LABEL_H
    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        ),
        f'<line class="axis" x1="0" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}"/>',
    ]
    for index, (monday, paise) in enumerate(weeks):
        height = round(plot_h * paise / top) if top > 0 and paise > 0 else 0
        x = index * slot + GAP // 2
        parts.append(
            f'<rect class="bar" x="{x}" y="{plot_h - height}" width="{slot - GAP}" '
            f'height="{height}"><title>{escape(week_label(monday))}: '
            f"{escape(amount(paise))}</title></rect>"
        )
        parts.append(
            f'<text class="tick" x="{x + (slot - GAP) // 2}" y="{HEIGHT - 4}" '
            f'text-anchor="middle">{escape(week_label(monday))}</text>'
        )
    parts.append("</svg>")
    # Every text above went through escape(); the rest is numbers.
    return Markup("".join(parts))  # noqa: S704
