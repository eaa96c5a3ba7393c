"""Decoding Explorer: see how a language model's next-token probabilities become text, and which
decoder fits which goal. Run with ``streamlit run app.py``; every page also renders on its own.

Every page lives at its own URL (/compare, /theory-lab, ...), query parameters included. Streamlit
serves its default page at / only (opening the default page's url_path says "Page not found"), so
the default page is a hidden one that forwards / to the first page with the link's parameters."""

import streamlit as st

st.set_page_config(page_title="Decoding Explorer", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page("pages/step_inspector.py", title="Step inspector", icon="🔬", url_path="step-inspector"),
    st.Page("pages/choice_points.py", title="Choice points", icon="🔀", url_path="choice-points"),
    st.Page("pages/theory_lab.py", title="Theory lab", icon="🧪", url_path="theory-lab"),
    st.Page("pages/consistency.py", title="Consistency", icon="📉", url_path="consistency"),
    st.Page("pages/speculative.py", title="Speculative", icon="⚡", url_path="speculative"),
    st.Page("pages/models.py", title="Models", icon="📦", url_path="models"),
]


def home() -> None:
    """The root URL: open the first page at its own URL, keeping the link's query parameters."""
    st.switch_page(PAGES[0], query_params=[(k, v) for k in st.query_params for v in st.query_params.get_all(k)])


st.navigation([st.Page(home, title="Home", url_path="home", default=True, visibility="hidden"), *PAGES]).run()
