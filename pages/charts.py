"""Plotly figures shared by the pages (layout only: every number comes from core). Shown with
``st.plotly_chart(fig, width="stretch", config=CHART_CONFIG)``, whose toolbar exports PNG;
``show_chart`` adds the CSV of the numbers behind the figure."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import hex_to_rgb
from plotly.colors import qualitative as palettes

CHART_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
BAYES_COLOUR = "#2b8a3e"
BAR_COLOUR = "#4c6ef5"


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=height,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.25})
    return fig


def display_number(x: float, decimals: int | None = None) -> float:
    """``x`` for display, never a negative zero: 0.0 where |x| < 1e-12, or, given the ``decimals``
    it will be shown with, wherever it would round to zero (a regret of -8.5e-7 would read "-0.000")."""
    return 0.0 if abs(x) < (1e-12 if decimals is None else 0.5 * 10.0**-decimals) else x


def risk_text(m: float) -> str:
    """A risk's label: 3 significant digits, "∞", or "1 − 2.3e-05" within 1e-3 of 1 (where 3 digits
    would read as a plain "1" for every decoder)."""
    if not math.isfinite(m):
        return "∞"
    if 0 < 1 - m < 1e-3:
        return f"1 − {1 - m:.2g}"
    return f"{display_number(m):.3g}"


def risk_bars(labels: Sequence[str], means: Sequence[float], lows: Sequence[float], highs: Sequence[float],
              highlight: Sequence[bool], goal_name: str) -> go.Figure:
    """Expected loss per decoder with 95% CI error bars; infinite risks are drawn as an "∞" label
    at the top instead of a bar; highlighted bars (the Bayes output) are green. Value labels sit
    above the CI's high end, clear of the error bar."""
    finite = [m for m in means if math.isfinite(m)]
    top = max([h for h in highs if math.isfinite(h)] + finite + [1e-9])
    ys = [m if math.isfinite(m) else None for m in means]
    texts = [risk_text(m) for m in means]
    fig = go.Figure(go.Bar(
        x=list(labels), y=ys,
        error_y={"type": "data", "symmetric": False,
                 "array": [(h - m) if math.isfinite(m) else 0 for m, h in zip(means, highs)],
                 "arrayminus": [(m - lo) if math.isfinite(m) else 0 for m, lo in zip(means, lows)]},
        marker_color=[BAYES_COLOUR if h else BAR_COLOUR for h in highlight],
        customdata=texts, hovertemplate="%{x}<br>risk %{customdata}<extra></extra>",
    ))
    for label, m, h, text in zip(labels, means, highs, texts):
        if math.isfinite(m):  # at the CI's high end (or the bar's top), nudged up: never on the error bar
            y = h if math.isfinite(h) and h >= m else m
            fig.add_annotation(x=label, y=y, text=text, showarrow=False, yanchor="bottom", yshift=3,
                               font={"size": 12})
        else:
            fig.add_annotation(x=label, y=top, text="∞", showarrow=False, font={"size": 18})
    fig.update_yaxes(range=[0, top * 1.25])
    return _layout(fig, f"Expected loss under the goal: {goal_name}", "", "risk (lower is better)")


def distribution_bars(series: Mapping[str, Mapping[str, float]], title: str, y_title: str = "probability") -> go.Figure:
    """Grouped bars: one series per name, {outcome label: value}, outcomes in first-seen order."""
    outcomes: list[str] = []
    for values in series.values():
        outcomes += [k for k in values if k not in outcomes]
    fig = go.Figure([go.Bar(name=name, x=outcomes, y=[values.get(o, 0.0) for o in outcomes],
                            hovertemplate="%{x}: %{y:.4f}<extra>" + name + "</extra>")
                     for name, values in series.items()])
    fig.update_layout(barmode="group")
    return _layout(fig, title, "output", y_title)


def heatmap(z, x: Sequence, y: Sequence, title: str, x_title: str, y_title: str, colorbar: str) -> go.Figure:
    """Cells of equal size: both axes are categories in the given order (x left to right, y bottom up)."""
    fig = go.Figure(go.Heatmap(z=z, x=[str(v) for v in x], y=[str(v) for v in y], zmin=0, zmax=1,
                               colorscale="Viridis", colorbar={"title": {"text": colorbar, "side": "right"}},
                               text=[[f"{v:.2f}" for v in row] for row in z], texttemplate="%{text}",
                               textfont={"size": 13}, xgap=1, ygap=1,
                               hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: %{{z:.3f}}<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return _layout(fig, title, x_title, y_title, height=max(300, 120 + 48 * len(y)))


def curves(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], baselines: Mapping[str, float],
           title: str, x_title: str, y_title: str) -> go.Figure:
    """Lines with markers (x, y) per series plus dashed horizontal baselines."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers")
                     for name, (x, y) in series.items()])
    for name, value in baselines.items():
        fig.add_hline(y=value, line_dash="dash", line_color="#868e96", annotation_text=name,
                      annotation_position="top right")
    return _layout(fig, title, x_title, y_title, height=400)


# ---- curves with bands, heatmaps with intervals, CSV export ------------------------------------------


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = hex_to_rgb(hex_colour)
    return f"rgba({r},{g},{b},{alpha})"


def risk_curves(series: Mapping[str, Sequence[tuple[float, float, float, float]]], floor: float | None,
                title: str, x_title: str, y_title: str = "risk under p (lower is better)",
                reverse_x: bool = False, floor_label: str = "Bayes risk", log_y: bool = False) -> go.Figure:
    """One line with markers per series of (x, value, low, high) on a log x axis, with a shaded band
    where low < high; infinite values are left out (a gap). ``floor`` is drawn as a dashed green
    line. ``reverse_x``: larger x on the left (e.g. ε, so that q → p reads left to right). ``log_y``:
    a log risk axis (values <= 0, and a floor of 0, cannot be drawn there and are left out)."""
    shown = (lambda v: math.isfinite(v) and v > 0) if log_y else math.isfinite
    colours, dashes = palettes.Plotly, ("solid", "dash", "dot", "dashdot")  # equal curves stay distinguishable
    fig = go.Figure()
    for i, (name, points) in enumerate(series.items()):
        colour, dash = colours[i % len(colours)], dashes[i % len(dashes)]
        finite = [p for p in points if shown(p[1]) and (not log_y or p[2] > 0)]
        if any(lo < hi for _, _, lo, hi in finite):
            xs = [p[0] for p in finite]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[p[3] for p in finite] + [p[2] for p in finite][::-1],
                                     fill="toself", fillcolor=_rgba(colour, 0.18), mode="lines", line={"width": 0},
                                     hoverinfo="skip", showlegend=False, legendgroup=name, name=f"{name} (95% band)"))
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] if shown(p[1]) else None for p in points],
                                 name=name, mode="lines+markers", legendgroup=name,
                                 line={"color": colour, "dash": dash, "width": 2.5 if i == 0 else 2},
                                 customdata=[[p[2], p[3]] for p in points],
                                 hovertemplate="%{x:.3g}: %{y:.4f} [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                                               f"<extra>{name}</extra>"))
    if floor is not None and shown(floor):
        fig.add_hline(y=floor, line_dash="dash", line_color=BAYES_COLOUR, annotation_text=f"{floor_label} {floor:.4g}",
                      annotation_position="bottom right")
    fig.update_xaxes(type="log", autorange="reversed" if reverse_x else True, dtick=1, exponentformat="power")
    if log_y:
        fig.update_yaxes(type="log", exponentformat="power")
    fig = _layout(fig, title, x_title, y_title, height=440)
    fig.update_layout(legend={"orientation": "v", "y": 1, "x": 1.02})
    return fig


def interval_heatmap(z, low, high, x: Sequence, y: Sequence, title: str, x_title: str, y_title: str,
                     colorbar: str) -> go.Figure:
    """``heatmap`` whose cells also show their 95% interval [low, high] (text and hover)."""
    fig = heatmap(z, x, y, title, x_title, y_title, colorbar)
    text = [[f"{v:.2f}<br><span style='font-size:10px'>[{lo:.2f}, {hi:.2f}]</span>" for v, lo, hi in zip(*rows)]
            for rows in zip(z, low, high)]
    fig.update_traces(text=text, customdata=[list(zip(lo, hi)) for lo, hi in zip(low, high)],
                      hovertemplate=f"{y_title} %{{y}}, {x_title} %{{x}}: %{{z:.3f}} "
                                    "(95% interval %{customdata[0]:.3f}–%{customdata[1]:.3f})<extra></extra>")
    return fig


def show_chart(fig: go.Figure, data, key: str, filename: str) -> None:
    """Draw ``fig`` (its toolbar saves a PNG) and a button downloading ``data`` (rows or a DataFrame:
    the numbers behind the figure) as ``filename``.csv."""
    st.plotly_chart(fig, width="stretch", config=CHART_CONFIG, key=key)
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    st.download_button("Download the chart's data (CSV)", frame.to_csv(index=False), f"{filename}.csv", "text/csv",
                       key=f"{key}_csv")
