"""A bar chart as inline SVG, rendered on the server: no JavaScript, no CDN, readable in both directions."""

from __future__ import annotations

from datetime import datetime

from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 14, 28  # margins (LEFT holds the scale; mirrored in right-to-left)


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2 or 5 times a power of ten at or above ``value`` (at least 1), so the scale reads well."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return max(1, m * step)
        step *= 10


def hourly_bars(series: list[tuple[datetime, int]], *, rtl: bool = False, title: str = "") -> SafeString:
    """Bars for ``(hour, count)`` pairs, oldest first. Right-to-left puts the newest hour on the left."""
    top = nice_ceiling(max((n for _, n in series), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(series))
    bar_w = max(1.0, slot * 0.7)

    def x_of(i: int) -> float:
        x = LEFT + i * slot + (slot - bar_w) / 2
        return WIDTH - x - bar_w if rtl else x

    bars, labels = [], []
    for i, (hour, n) in enumerate(series):
        h = plot_h * n / top
        local = timezone.localtime(hour)
        when = formats.date_format(local, "H:i")
        tip = _("%(hour)s: %(count)d awarded") % {"hour": when, "count": n}
        bars.append((f"{x_of(i):.1f}", f"{TOP + plot_h - h:.1f}", f"{bar_w:.1f}", f"{h:.1f}", tip))
        if i % 3 == 0 or i == len(series) - 1:
            labels.append((f"{x_of(i) + bar_w / 2:.1f}", HEIGHT - 8, when))
    scale_x = WIDTH - LEFT + 6 if rtl else LEFT - 6
    anchor = "start" if rtl else "end"
    axis_x1, axis_x2 = (RIGHT, WIDTH - LEFT) if rtl else (LEFT, WIDTH - RIGHT)
    return format_html(
        '<svg class="pe-chart" role="img" viewBox="0 0 {w} {h}" width="100%" preserveAspectRatio="xMidYMid meet" '
        'xmlns="http://www.w3.org/2000/svg"><title>{title}</title>'
        '<line x1="{ax1}" x2="{ax2}" y1="{base}" y2="{base}" class="pe-axis"/>'
        '<line x1="{ax1}" x2="{ax2}" y1="{top_y}" y2="{top_y}" class="pe-grid"/>'
        '<text x="{sx}" y="{top_label}" text-anchor="{anchor}" class="pe-scale">{top}</text>'
        '<text x="{sx}" y="{base}" text-anchor="{anchor}" class="pe-scale">0</text>'
        "{bars}{labels}</svg>",
        w=WIDTH,
        h=HEIGHT,
        title=title,
        ax1=axis_x1,
        ax2=axis_x2,
        base=TOP + plot_h,
        top_y=TOP,
        top_label=TOP + 4,
        sx=scale_x,
        anchor=anchor,
        top=top,
        bars=format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}" class="pe-bar"><title>{}</title></rect>',
            bars,
        ),
        labels=format_html_join("", '<text x="{}" y="{}" text-anchor="middle" class="pe-hour">{}</text>', labels),
    )
