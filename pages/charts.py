"""Plotly figures shared by the pages (layout only: every number comes from core). Shown with
``st.plotly_chart(fig, width="stretch", config=CHART_CONFIG)``, whose toolbar exports PNG."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

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
