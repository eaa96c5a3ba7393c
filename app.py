"""Decoding Explorer: see how a language model's next-token probabilities become text, and which
decoder fits which goal. Run with ``streamlit run app.py``; every page also renders on its own."""

import streamlit as st

st.set_page_config(page_title="Decoding Explorer", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare", default=True),
    st.Page("pages/step_inspector.py", title="Step inspector", icon="🔬", url_path="step-inspector"),
    st.Page("pages/choice_points.py", title="Choice points", icon="🔀", url_path="choice-points"),
    st.Page("pages/theory_lab.py", title="Theory lab", icon="🧪", url_path="theory-lab"),
    st.Page("pages/speculative.py", title="Speculative", icon="⚡", url_path="speculative"),
    st.Page("pages/models.py", title="Models", icon="📦", url_path="models"),
]

st.navigation(PAGES).run()
