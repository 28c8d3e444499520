"""One self-contained HTML page about a preprocessing run: funnel, stage times, distributions, drift, statistics.

    html = render_report(summary, stats_payload, reference_payload=None)   # summary.json, stats.json dicts

Figures are drawn with matplotlib (Agg) and embedded as base64 PNG; the page has
no script, no stylesheet link and no external URL, so it opens anywhere offline
and can be attached to a mail. Sections (their ids): run, funnel, stages,
distributions, months, districts, drift, columns.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np

from taxifare_core import contract, stats

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


def _figure(width: float = 11, height: float = 3.2, columns: int = 1, rows: int = 1):
    """A matplotlib Figure (no pyplot, no display) and its axes as a flat list."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=80)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, list(axes.ravel())


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


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


def _histogram_panel(axes, series, name: str, scale: float, unit: str) -> None:
    """Shares per regular bin of one column for each series; the overflow bin's share in the legend."""
    regular = stats.NUMERIC_BINS[name][2]
    for label, split in series:
        column = _column(split, name)
        if column is None:
            continue
        edges = np.asarray(column["histogram"]["edges"]) * scale
        shares = _shares(column["histogram"]["counts"])
        extra = f", {shares[regular:].sum():.1%} above {edges[regular]:g}" if len(shares) > regular else ""
        axes.stairs(shares[:regular], edges[:regular + 1], label=f"{label}{extra}", color=_COLOURS[label],
                    linewidth=1.5)
    axes.set_xlabel(unit)
    axes.set_ylabel("share of rides")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)


def _bars(axes, series, categories: list[str], shares_of, every: int = 1) -> None:
    """Grouped bars: one group per category, one bar per series."""
    width = 0.8 / max(len(series), 1)
    positions = np.arange(len(categories))
    for i, (label, split) in enumerate(series):
        axes.bar(positions + i * width - 0.4 + width / 2, shares_of(split), width, label=label,
                 color=_COLOURS[label])
    axes.set_xticks(positions[::every], categories[::every], rotation=60 if every == 1 else 0, fontsize=8)
    axes.set_ylabel("share of rides")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")


def distributions_figure(series) -> str:
    """Fare, both distances, local hour and passengers; train vs val (vs reference), as shares."""
    figure, panels = _figure(11, 6.4, 3, 2)
    grid = [panels[:3], panels[3:]]
    _histogram_panel(grid[0][0], series, contract.LABEL_COLUMN, 1, "fare (USD)")
    _histogram_panel(grid[0][1], series, "haversine_km_scaled", contract.DISTANCE_SCALE_KM, "haversine distance (km)")
    _histogram_panel(grid[0][2], series, "manhattan_km_scaled", contract.DISTANCE_SCALE_KM, "manhattan distance (km)")
    for panel in grid[0][1:]:
        panel.set_xlim(0, 30)
    _bars(grid[1][0], series, [str(h) for h in range(stats.HOURS)],
          lambda split: _shares(split.get("rides_per_hour", [0] * stats.HOURS)), every=3)
    grid[1][0].set_xlabel("local pickup hour (New York)")
    _bars(grid[1][1], series, [str(p) for p in range(1, 8)],
          lambda split: _shares(_column(split, "passenger_count_scaled")["histogram"]["counts"]))
    grid[1][1].set_xlabel("passengers")
    weekdays = [w.capitalize() for w in contract.WEEKDAYS]
    _bars(grid[1][2], series, weekdays, lambda split: _shares(stats.group_counts(split, "weekday")[1]))
    grid[1][2].set_xlabel("local pickup weekday")
    figure.tight_layout()
    return _png(figure)


def months_figure(series) -> str:
    """Rides per local pickup month, one line per series (counts, log scale when they differ a lot)."""
    figure, (axes,) = _figure(11, 3.2)
    months = sorted({m for _, split in series for m in split["rides_per_month"]})
    positions = {m: i for i, m in enumerate(months)}
    for label, split in series:
        items = sorted(split["rides_per_month"].items())
        axes.bar([positions[m] for m, _ in items], [n for _, n in items], width=0.9, alpha=0.6,
                 label=label, color=_COLOURS[label])
    ticks = [i for i, m in enumerate(months) if m.endswith("-01")] or list(range(len(months)))
    axes.set_xticks(ticks, [months[i] for i in ticks], fontsize=8, rotation=45)
    axes.set_ylabel("rides")
    axes.set_xlabel("local pickup month (New York)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    return _png(figure)


def districts_figure(series) -> str:
    """Pickup and dropoff district shares (the 20 districts and "none of the 20")."""
    figure, panels = _figure(11, 3.4, 2)
    for axes, group in zip(panels, ("pickup_district", "dropoff_district")):
        labels = stats.group_counts(series[0][1], group)[0] if series else []
        _bars(axes, series, labels, lambda split, g=group: _shares(stats.group_counts(split, g)[1]))
        axes.set_xlabel(group.replace("_", " ") + " (geohash)")
    figure.tight_layout()
    return _png(figure)


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
    rows += [("duplicates", summary.get("duplicates", 0)), ("train", summary.get("train_rows", 0)),
             ("val", summary.get("val_rows", 0))]
    return rows


def funnel_figure(summary: dict) -> str:
    """The funnel as horizontal bars (log scale: small losses stay visible)."""
    rows = funnel_rows(summary)
    figure, (axes,) = _figure(11, 0.3 * len(rows) + 0.8)
    labels = [label for label, _ in rows][::-1]
    values = [max(n, 0) for _, n in rows][::-1]
    colours = ["#2ca02c" if label in ("train", "val", "rows read") else "#d62728" for label in labels]
    axes.barh(labels, [v if v > 0 else np.nan for v in values], color=colours)
    for y, v in enumerate(values):
        axes.text(max(v, 1), y, f" {v:,}", va="center", fontsize=8)
    axes.set_xscale("log")
    axes.set_xlim(0.8, max(values + [1]) * 5)
    axes.set_xlabel("rows (log scale)")
    axes.tick_params(axis="y", labelsize=8)
    return _png(figure)


def _drift_section(drift: dict | None) -> str:
    if not drift:
        return "<p>No drift computed.</p>"
    rows, classes = [], []
    for name, score in drift["scores"].items():
        expected = name in drift.get("expected", [])
        flagged = name in drift["flagged"]
        verdict = stats.drift_level(score) + (" (by construction: chronological split)" if expected else "")
        rows.append([name, _number(score, 3), verdict])
        classes.append("flagged" if flagged else ("expected" if expected else ""))
    flagged = ", ".join(drift["flagged"]) or "nothing"
    return (f"<p><b>{html.escape(drift['current'])}</b> against <b>{html.escape(str(drift['reference']))}</b>: "
            f"flagged: <b>{html.escape(flagged)}</b>.</p>"
            f"<p class=\"note\">{html.escape(drift['method'])}; &lt; 0.1 stable, 0.1-0.2 moderate, "
            f"&gt; {drift['threshold']} shifted (flagged, red). One-hot groups are scored as one categorical "
            "feature each (districts with \"none of the 20\").</p>"
            + _table(["feature", "PSI", "verdict"], rows, classes))


def _columns_section(stats_payload: dict) -> str:
    parts = []
    for split_name, split in stats_payload["splits"].items():
        rows = [[c["name"], _number(c["count"]), _number(c["mean"]), _number(c["std"]), _number(c["min"]),
                 _number(c["max"])] for c in split["columns"]]
        parts.append(f"<h3>{html.escape(split_name)} ({split['rows']:,} rows)</h3>"
                     + _table(["column", "count", "mean", "std (population)", "min", "max"], rows))
    return "".join(parts)


def _stages_section(summary: dict) -> str:
    stages = summary.get("stages") or {}
    if not stages:
        return "<p>No stage times recorded.</p>"
    total = sum(s["seconds"] for s in stages.values()) or 1.0
    rows = [[name, f"{s['seconds']:.2f}", f"{s['seconds'] / total:.0%}", "-" if s["batches"] is None else s["batches"]]
            for name, s in stages.items()]
    return (_table(["stage", "seconds", "share", "batches"], rows)
            + "<p class=\"note\">Time inside each step's DoFn, summed over batches and workers (Beam "
              "distributions, so it works on Dataflow too); \"other\" is the rest of the wall time "
              "(reading, writing the shards, Beam's own work), meaningful for an in-process run.</p>")


def render_report(summary: dict, stats_payload: dict, reference: dict | None = None) -> str:
    """The HTML page (a string) for a run's summary.json and stats.json, optionally against a reference's stats."""
    series = _series(stats_payload, reference)
    config = summary.get("config", {})
    run_rows = [[key, config.get(key)] for key in ("input", "table", "output", "min_date", "max_date", "val_start",
                                                   "dedupe", "runner") if config.get(key)]
    run_rows.append(["wall time (s)", summary.get("seconds")])
    run_rows.append(["counts add up", "yes" if summary.get("balanced") else "NO"])
    drift = stats_payload.get("drift") or {}
    kept = sum(split["rows"] for split in stats_payload["splits"].values())
    headline = (f"{summary.get('rows_read', 0):,} rows read, {kept:,} kept "
                f"({summary.get('train_rows', 0):,} train, {summary.get('val_rows', 0):,} val); drift flagged: "
                f"<b>{html.escape(', '.join(drift.get('flagged', [])) or 'nothing')}</b>")
    body = [
        '<h1>Preprocessing run report</h1>', f"<p>{headline}</p>",
        '<h2 id="run">Run</h2>', _table(["setting", "value"], run_rows),
        '<h2 id="funnel">Row funnel</h2>', funnel_figure(summary),
        _table(["step", "rows"], [[label, f"{n:,}"] for label, n in funnel_rows(summary)]),
        '<h2 id="stages">Where time goes</h2>', _stages_section(summary),
        '<h2 id="distributions">Distributions (share of rides)</h2>',
        distributions_figure(series) if series else "<p>No rows.</p>",
        '<h2 id="months">Rides per month</h2>', months_figure(series) if series else "<p>No rows.</p>",
        '<h2 id="districts">Pickup and dropoff districts</h2>',
        districts_figure(series) if series else "<p>No rows.</p>",
        '<h2 id="drift">Drift</h2>', _drift_section(stats_payload.get("drift")),
        '<h2 id="columns">Every column</h2>', _columns_section(stats_payload),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>taxifare preprocessing report"
            f"</title><style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
