"""Decoding Explorer: see how a language model's next-token probabilities become text, and which
decoder fits which goal. Run with ``streamlit run app.py``; every page also renders on its own.

Every page lives at its own URL, query parameters included: the page file's name (/compare,
/theory_lab, ...), which is also the URL Streamlit's legacy ``pages/`` mode gives that file on a
server's first run (see ``pages.common.leave_legacy_pages_mode``), so even the first request after a
start opens its page. Streamlit serves its default page at / only (opening the default page's
url_path says "Page not found"), so the default page is a hidden one that forwards / to the first
page with the link's parameters; hidden aliases keep the older hyphenated links working."""

import streamlit as st

from pages.common import leave_legacy_pages_mode

leave_legacy_pages_mode()
st.set_page_config(page_title="Decoding Explorer", page_icon="🧭", layout="wide")

PAGES = [
    st.Page("pages/compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page("pages/step_inspector.py", title="Step inspector", icon="🔬", url_path="step_inspector"),
    st.Page("pages/choice_points.py", title="Choice points", icon="🔀", url_path="choice_points"),
    st.Page("pages/theory_lab.py", title="Theory lab", icon="🧪", url_path="theory_lab"),
    st.Page("pages/consistency.py", title="Consistency", icon="📉", url_path="consistency"),
    st.Page("pages/speculative.py", title="Speculative", icon="⚡", url_path="speculative"),
    st.Page("pages/models.py", title="Models", icon="📦", url_path="models"),
]


OLD_URLS = {"step-inspector": 1, "choice-points": 2, "theory-lab": 3}  # earlier links -> index in PAGES


def forward(page: st.Page):
    """A hidden page that opens ``page`` at its own URL, keeping the link's query parameters."""
    def go() -> None:
        st.switch_page(page, query_params=[(k, v) for k in st.query_params for v in st.query_params.get_all(k)])
    return go


hidden = [st.Page(forward(PAGES[0]), title="Home", url_path="home", default=True, visibility="hidden")]
hidden += [st.Page(forward(PAGES[i]), title=f"{PAGES[i].title} (old link)", url_path=old, visibility="hidden")
           for old, i in OLD_URLS.items()]
st.navigation([*hidden, *PAGES]).run()
