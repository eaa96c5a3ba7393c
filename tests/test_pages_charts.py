"""Shared Plotly figures and display formatting (pages/charts.py): labels clear of error bars, no
negative zeros, risks near 1 keep their digits, heatmap cells of equal size."""

from __future__ import annotations

import math

from pages.charts import display_number, heatmap, risk_bars, risk_text


def test_display_number_has_no_negative_zero():
    assert f"{display_number(-1e-17):.4f}" == "0.0000" and f"{display_number(-0.0):.3f}" == "0.000"
    assert display_number(-0.25) == -0.25 and display_number(1e-9) == 1e-9
    assert f"{display_number(-8.5e-7, 3):.3f}" == "0.000" and f"{display_number(-8.5e-7, 4):.4f}" == "0.0000"
    assert f"{display_number(-4e-4, 3):.3f}" == "0.000" and f"{display_number(-6e-4, 3):.3f}" == "-0.001"
    assert display_number(-2e-5, 6) == -2e-5


def test_risk_text():
    assert risk_text(1.4605) == "1.46" and risk_text(math.inf) == "∞" and risk_text(-1e-17) == "0"
    assert risk_text(1 - 2.3e-5) == "1 − 2.3e-05" and risk_text(1.0) == "1" and risk_text(0.998) == "0.998"


def test_risk_labels_sit_above_the_error_bars():
    means, lows, highs = [1.46, 2.24, math.inf], [1.16, 1.67, math.inf], [1.76, 2.81, math.inf]
    fig = risk_bars(["greedy", "sampling", "beam"], means, lows, highs, [False, True, False], "Hamming")
    bar = fig.data[0]
    assert bar.text is None  # no label inside or on top of the bar, where the error bar crosses it
    labels = {a.x: a for a in fig.layout.annotations}
    assert labels["greedy"].text == "1.46" and labels["greedy"].y == 1.76 and labels["greedy"].yanchor == "bottom"
    assert labels["sampling"].text == "2.24" and labels["sampling"].y == 2.81
    assert labels["beam"].text == "∞"
    assert fig.layout.yaxis.range[1] > 2.81 * 1.2  # headroom for the label above the highest CI


def test_heatmap_axes_are_categories_with_readable_cells():
    fig = heatmap([[0.5, 0.25], [1.0, 0.0]], [0.1, 10.0], [2, 8], "t", "Dirichlet α", "#states", "fraction of chains")
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.type == "category"
    hm = fig.data[0]
    assert list(hm.x) == ["0.1", "10.0"] and list(hm.y) == ["2", "8"]
    assert hm.textfont.size >= 12 and hm.text[0][1] == "0.25"
    assert hm.colorbar.title.text == "fraction of chains"
    assert fig.layout.height >= 300
