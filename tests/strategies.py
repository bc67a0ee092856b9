"""Hypothesis strategies that several property tests draw from."""

from __future__ import annotations

from hypothesis import strategies as st


def dns_labels(alphabet: str, longest_middle: int) -> st.SearchStrategy[str]:
    """Labels `[A]([A-]{0,longest_middle}[A])?` over the characters `alphabet` (RFC 1123
    §2.1's shape), drawn as their two ends and their middle: a regex strategy draws each
    character on its own, and every draw costs Hypothesis more than the label."""
    return st.builds(
        lambda ends, middle: ends if len(ends) == 1 else ends[0] + middle + ends[1],
        st.text(alphabet=alphabet, min_size=1, max_size=2),
        st.text(alphabet=alphabet + "-", max_size=longest_middle),
    )
