"""One self-contained HTML page about a preprocessing run: funnel, stage times, distributions, drift, statistics.

    html = render_report(summary, stats_payload, reference_payload=None)   # summary.json, stats.json dicts

Figures are inline SVG drawn here from the statistics (a few hundred shapes, a few
milliseconds: importing and running matplotlib would cost a preprocessing run of
1.1 M rows about a third of its time). The page has no script, no stylesheet link
and no external URL (inline SVG needs no xmlns in HTML), so it opens anywhere
offline and can be attached to a mail. Sections (their ids): run, funnel, stages,
distributions, months, districts, drift, columns.
"""

from __future__ import annotations

import html

import numpy as np

from taxifare_core import contract, stats
from taxifare_core.drift import drift_level, group_counts

SECTIONS = ("run", "funnel", "stages", "distributions", "months", "districts", "drift", "columns")
_COLOURS = {"train": "#1f77b4", "val": "#ff7f0e", "reference": "#555555"}
_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; max-width: 1150px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 12px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
tr.flagged td { background: #fdd; font-weight: bold; } tr.expected td { background: #fff4d6; }
p.note { font-size: 12px; color: #555; } img { max-width: 100%; }
"""


def _nice_step(top: float) -> float:
    """A round tick step giving 4-6 ticks up to `top`."""
    if top <= 0:
        return 1.0
    raw = top / 5
    power = 10 ** np.floor(np.log10(raw))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw))


def _legend(series, x: float) -> str:
    items = []
    for i, (label, colour, _) in enumerate(series):
        y = 14 + 14 * i
        items.append(
            f'<rect x="{x - 95:.0f}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x - 80:.0f}" y="{y}" font-size="11">{html.escape(label)}</text>'
        )
    return "".join(items)


class _Plot:
    """An SVG plot area with a linear y axis (shares or counts), categories or a numeric x axis."""

    LEFT, RIGHT, TOP, BOTTOM = 52, 10, 10, 58

    def __init__(self, width: int, height: int, y_max: float, y_label: str, share: bool):
        self.width, self.height, self.share = width, height, share
        self.inner_w = width - self.LEFT - self.RIGHT
        self.inner_h = height - self.TOP - self.BOTTOM
        self.step = _nice_step(y_max)
        self.y_top = max(self.step * np.ceil(y_max / self.step), self.step)
        self.parts = [f'<svg width="{width}" height="{height}" font-family="sans-serif" font-size="10">']
        for k in range(round(self.y_top / self.step) + 1):
            value = k * self.step
            y = self.y(value)
            label = f"{value:.0%}" if share and self.step >= 0.01 else (f"{value:.1%}" if share else f"{value:,.0f}")
            self.parts.append(
                f'<line x1="{self.LEFT}" x2="{width - self.RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#e3e3e3"/><text x="{self.LEFT - 4}" y="{y + 3:.1f}" '
                f'text-anchor="end">{label}</text>'
            )
        self.parts.append(
            f'<text x="12" y="{self.TOP + self.inner_h / 2:.0f}" text-anchor="middle" '
            f'transform="rotate(-90 12 {self.TOP + self.inner_h / 2:.0f})">{html.escape(y_label)}</text>'
        )

    def y(self, value: float) -> float:
        return self.TOP + self.inner_h * (1 - value / self.y_top)

    def x_label(self, text: str) -> None:
        self.parts.append(
            f'<text x="{self.LEFT + self.inner_w / 2:.0f}" y="{self.height - 4}" '
            f'text-anchor="middle" font-size="11">{html.escape(text)}</text>'
        )

    def done(self, series) -> str:
        self.parts.append(
            f'<line x1="{self.LEFT}" x2="{self.width - self.RIGHT}" y1="{self.y(0):.1f}" '
            f'y2="{self.y(0):.1f}" stroke="#888"/>'
        )
        self.parts.append(_legend(series, self.width - self.RIGHT))
        return "".join(self.parts) + "</svg>"


def svg_bars(
    categories: list[str],
    series,
    y_label: str,
    x_label: str,
    width: int = 360,
    height: int = 230,
    every: int = 1,
    share: bool = True,
) -> str:
    """Grouped bars: one group per category, one bar per (label, colour, values) series."""
    top = max([float(np.max(values)) for _, _, values in series if len(values)] + [0.0])
    plot = _Plot(width, height, top, y_label, share)
    slot = plot.inner_w / max(len(categories), 1)
    bar = slot * 0.8 / max(len(series), 1)
    for i, (_, colour, values) in enumerate(series):
        for j, value in enumerate(values):
            x = plot.LEFT + j * slot + slot * 0.1 + i * bar
            y = plot.y(value)
            plot.parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 0.5, 0.5):.1f}" '
                f'height="{plot.y(0) - y:.1f}" fill="{colour}"/>'
            )
    for j, category in enumerate(categories):
        if j % every:
            continue
        x = plot.LEFT + (j + 0.5) * slot
        y = plot.y(0) + 10
        rotate = (
            f' transform="rotate(-55 {x:.1f} {y:.1f})" text-anchor="end"'
            if max(map(len, categories)) > 2 and len(categories) > 7
            else ' text-anchor="middle"'
        )
        plot.parts.append(f'<text x="{x:.1f}" y="{y:.1f}"{rotate}>{html.escape(category)}</text>')
    plot.x_label(x_label)
    return plot.done(series)


def svg_steps(
    edges: np.ndarray, series, x_max: float, y_label: str, x_label: str, width: int = 360, height: int = 230
) -> str:
    """Histogram outlines over shared bin edges (up to x_max), one per (label, colour, shares) series."""
    edges = np.asarray(edges, dtype=np.float64)
    shown = int(np.searchsorted(edges, x_max, side="right")) - 1
    top = max([float(np.max(values[:shown])) for _, _, values in series if len(values)] + [0.0])
    plot = _Plot(width, height, top, y_label, True)
    low = edges[0]

    def x(value):
        return plot.LEFT + plot.inner_w * (value - low) / (x_max - low)

    for _, colour, values in series:
        points = [f"{x(edges[0]):.1f},{plot.y(0):.1f}"]
        for k in range(shown):
            points += [f"{x(edges[k]):.1f},{plot.y(values[k]):.1f}", f"{x(edges[k + 1]):.1f},{plot.y(values[k]):.1f}"]
        points.append(f"{x(edges[shown]):.1f},{plot.y(0):.1f}")
        plot.parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
    step = _nice_step(x_max - low)
    for k in range(int((x_max - low) / step) + 1):
        value = low + k * step
        plot.parts.append(f'<text x="{x(value):.1f}" y="{plot.y(0) + 13:.1f}" text-anchor="middle">{value:g}</text>')
    plot.x_label(x_label)
    return plot.done(series)


def svg_funnel(rows: list[tuple[str, int]], width: int = 760) -> str:
    """Horizontal bars on a log scale (small losses stay visible), labelled with their counts."""
    left, right, bar_h = 230, 70, 18
    height = bar_h * len(rows) + 30
    top = max([n for _, n in rows] + [10])
    decades = int(np.ceil(np.log10(top)))
    inner = width - left - right

    def x(n):
        return left + inner * (np.log10(max(n, 1)) / decades)

    parts = [f'<svg width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    for d in range(decades + 1):
        parts.append(
            f'<line x1="{x(10**d):.1f}" x2="{x(10**d):.1f}" y1="0" y2="{height - 22}" stroke="#e3e3e3"/>'
            f'<text x="{x(10**d):.1f}" y="{height - 8}" text-anchor="middle" font-size="10">'
            f"{10**d:,}</text>"
        )
    for i, (label, n) in enumerate(rows):
        y = 4 + i * bar_h
        colour = "#2ca02c" if label in ("rows read", "train", "val") else "#d62728"
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{html.escape(label)}</text>')
        if n > 0:
            parts.append(
                f'<rect x="{left}" y="{y + 2}" width="{max(x(n) - left, 2):.1f}" height="{bar_h - 5}" fill="{colour}"/>'
            )
        parts.append(f'<text x="{max(x(n), left) + 4:.1f}" y="{y + 12}">{n:,}</text>')
    return "".join(parts) + "</svg>"


def _series(stats_payload: dict, reference: dict | None) -> list[tuple[str, dict]]:
    """(label, split) pairs to draw: train, val and the reference's rows (all splits together)."""
    splits = stats_payload["splits"]
    series = [(name, splits[name]) for name in ("train", "val") if name in splits and splits[name]["rows"]]
    if reference is not None:
        series.append(("reference", stats.combine_splits(list(reference["splits"].values()))))
    return series


def _column(split: dict, name: str) -> dict | None:
    return next((c for c in split["columns"] if c["name"] == name), None)


def _shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return counts / counts.sum() if counts.sum() else counts


def _coloured(series, values_of) -> list[tuple[str, str, np.ndarray]]:
    return [(label, _COLOURS[label], values_of(split)) for label, split in series]


def _histogram(series, name: str, scale: float, x_max: float, unit: str) -> str:
    """Shares per fixed bin of one column (the share beyond x_max in the legend)."""
    edges = np.asarray(stats.COLUMN_EDGES[name]) * scale
    beyond = int(np.searchsorted(edges, x_max, side="right")) - 1
    drawn = []
    for label, split in series:
        shares = _shares(_column(split, name)["histogram"]["counts"])
        drawn.append((f"{label} ({shares[beyond:].sum():.1%} > {x_max:g})", _COLOURS[label], shares))
    return svg_steps(edges, drawn, x_max, "share of rides", unit)


def distributions_figure(series) -> str:
    """Fare, both distances, local hour, passengers and weekday; train vs val (vs reference), as shares."""
    figures = [
        _histogram(series, contract.LABEL_COLUMN, 1, 80, "fare (USD)"),
        _histogram(series, "haversine_km_scaled", contract.DISTANCE_SCALE_KM, 30, "haversine distance (km)"),
        _histogram(series, "manhattan_km_scaled", contract.DISTANCE_SCALE_KM, 30, "manhattan distance (km)"),
        svg_bars(
            [str(h) for h in range(stats.HOURS)],
            _coloured(series, lambda split: _shares(split.get("rides_per_hour", [0] * stats.HOURS))),
            "share of rides",
            "local pickup hour (New York)",
            every=3,
        ),
        svg_bars(
            [str(p) for p in range(1, 8)],
            _coloured(series, lambda split: _shares(_column(split, "passenger_count_scaled")["histogram"]["counts"])),
            "share of rides",
            "passengers",
        ),
        svg_bars(
            [w.capitalize() for w in contract.WEEKDAYS],
            _coloured(series, lambda split: _shares(group_counts(split, "weekday")[1])),
            "share of rides",
            "local pickup weekday",
        ),
    ]
    return "<div>" + "".join(figures) + "</div>"


def months_figure(series) -> str:
    """Rides per local pickup month (counts), one bar series per split."""
    months = sorted({m for _, split in series for m in split["rides_per_month"]})
    every = max(1, len(months) // 24)
    return svg_bars(
        months,
        _coloured(series, lambda split: np.array([split["rides_per_month"].get(m, 0) for m in months], dtype=float)),
        "rides",
        "local pickup month (New York)",
        width=1080,
        height=260,
        every=every,
        share=False,
    )


def districts_figure(series) -> str:
    """Pickup and dropoff district shares (the 20 districts and "none of the 20")."""
    figures = []
    for group in ("pickup_district", "dropoff_district"):
        labels = group_counts(series[0][1], group)[0]
        figures.append(
            svg_bars(
                labels,
                _coloured(series, lambda split, g=group: _shares(group_counts(split, g)[1])),
                "share of rides",
                group.replace("_", " ") + " (geohash)",
                width=540,
                height=250,
            )
        )
    return "<div>" + "".join(figures) + "</div>"


def _table(headers: list[str], rows: list[list], classes: list[str] | None = None) -> str:
    head = "".join(f'<th class="{"name" if i == 0 else ""}">{html.escape(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        css = f' class="{classes[r]}"' if classes and classes[r] else ""
        cells = "".join(f'<td class="{"name" if i == 0 else ""}">{html.escape(str(v))}</td>' for i, v in enumerate(row))
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def funnel_rows(summary: dict) -> list[tuple[str, int]]:
    """(step, rows) from the rows read to train and val."""
    rows = [("rows read", summary.get("rows_read", 0)), ("bad input (dead letter)", summary.get("bad_input", 0))]
    rows += [(f"dropped: {rule}", n) for rule, n in summary.get("dropped", {}).items()]
    rows += [
        ("duplicates", summary.get("duplicates", 0)),
        ("train", summary.get("train_rows", 0)),
        ("val", summary.get("val_rows", 0)),
    ]
    return rows


def funnel_figure(summary: dict) -> str:
    """The funnel as horizontal bars (log scale)."""
    return svg_funnel(funnel_rows(summary))


def _drift_section(drift: dict | None) -> str:
    if not drift:
        return "<p>No drift computed.</p>"
    rows, classes = [], []
    for name, score in drift["scores"].items():
        expected = name in drift.get("expected", [])
        flagged = name in drift["flagged"]
        verdict = drift_level(score) + (" (by construction: chronological split)" if expected else "")
        rows.append([name, _number(score, 3), verdict])
        classes.append("flagged" if flagged else ("expected" if expected else ""))
    flagged = ", ".join(drift["flagged"]) or "nothing"
    return (
        f"<p><b>{html.escape(drift['current'])}</b> against <b>{html.escape(str(drift['reference']))}</b>: "
        f"flagged: <b>{html.escape(flagged)}</b>.</p>"
        f'<p class="note">{html.escape(drift["method"])}; &lt; 0.1 stable, 0.1-0.2 moderate, '
        f"&gt; {drift['threshold']} shifted (flagged, red). One-hot groups are scored as one categorical "
        'feature each (districts with "none of the 20").</p>' + _table(["feature", "PSI", "verdict"], rows, classes)
    )


def _columns_section(stats_payload: dict) -> str:
    parts = []
    for split_name, split in stats_payload["splits"].items():
        rows = [
            [
                c["name"],
                _number(c["count"]),
                _number(c["mean"]),
                _number(c["std"]),
                _number(c["min"]),
                _number(c["max"]),
            ]
            for c in split["columns"]
        ]
        parts.append(
            f"<h3>{html.escape(split_name)} ({split['rows']:,} rows)</h3>"
            + _table(["column", "count", "mean", "std (population)", "min", "max"], rows)
        )
    return "".join(parts)


def _stages_section(summary: dict) -> str:
    stages = summary.get("stages") or {}
    if not stages:
        return "<p>No stage times recorded.</p>"
    total = sum(s["seconds"] for s in stages.values()) or 1.0
    rows = [
        [name, f"{s['seconds']:.2f}", f"{s['seconds'] / total:.0%}", "-" if s["batches"] is None else s["batches"]]
        for name, s in stages.items()
    ]
    return (
        _table(["stage", "seconds", "share", "batches"], rows)
        + '<p class="note">Time inside each step\'s DoFn, summed over batches and workers (Beam '
        'distributions, so it works on Dataflow too); "other" is the rest of the wall time '
        "(reading, writing the shards, Beam's own work), meaningful for an in-process run.</p>"
    )


def _unpublished_note(summary: dict) -> str:
    """A banner for a run kept unpublished (summary["not_published"] says why), else nothing."""
    reason = summary.get("not_published")
    if not reason:
        return ""
    return (
        f'<p class="flagged"><b>This run was NOT published</b>: {html.escape(reason)}. The output folder\'s '
        "summary.json still names the previous run; this run's files are kept here for inspection.</p>"
    )


def render_report(summary: dict, stats_payload: dict, reference: dict | None = None) -> str:
    """The HTML page (a string) for a run's summary.json and stats.json, optionally against a reference's stats."""
    series = _series(stats_payload, reference)
    config = summary.get("config", {})
    run_rows = [
        [key, config.get(key)]
        for key in ("input", "table", "output", "min_date", "max_date", "val_start", "dedupe", "runner")
        if config.get(key)
    ]
    run_rows.append(["wall time (s)", summary.get("seconds")])
    run_rows.append(["counts add up", "yes" if summary.get("balanced") else "NO"])
    drift = stats_payload.get("drift") or {}
    kept = sum(split["rows"] for split in stats_payload["splits"].values())
    headline = (
        f"{summary.get('rows_read', 0):,} rows read, {kept:,} kept "
        f"({summary.get('train_rows', 0):,} train, {summary.get('val_rows', 0):,} val); drift flagged: "
        f"<b>{html.escape(', '.join(drift.get('flagged', [])) or 'nothing')}</b>"
    )
    body = [
        "<h1>Preprocessing run report</h1>",
        _unpublished_note(summary),
        f"<p>{headline}</p>",
        '<h2 id="run">Run</h2>',
        _table(["setting", "value"], run_rows),
        '<h2 id="funnel">Row funnel</h2>',
        funnel_figure(summary),
        _table(["step", "rows"], [[label, f"{n:,}"] for label, n in funnel_rows(summary)]),
        '<h2 id="stages">Where time goes</h2>',
        _stages_section(summary),
        '<h2 id="distributions">Distributions (share of rides)</h2>',
        distributions_figure(series) if series else "<p>No rows.</p>",
        '<h2 id="months">Rides per month</h2>',
        months_figure(series) if series else "<p>No rows.</p>",
        '<h2 id="districts">Pickup and dropoff districts</h2>',
        districts_figure(series) if series else "<p>No rows.</p>",
        '<h2 id="drift">Drift</h2>',
        _drift_section(stats_payload.get("drift")),
        '<h2 id="columns">Every column</h2>',
        _columns_section(stats_payload),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>taxifare preprocessing report'
        f"</title><style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
