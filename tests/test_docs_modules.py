"""Every module of the package is named in docs/, where a reader of the repository finds it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "scanner"


def modules() -> list[str]:
    """Module paths relative to the package (`core/assess.py`), package inits left out."""
    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )


def test_every_module_is_named_in_the_docs() -> None:
    docs = "\n".join(page.read_text("utf-8") for page in sorted((ROOT / "docs").glob("*.md")))
    missing = []
    for module in modules():
        folder, _, name = module.rpartition("/")
        # Named by its path (`core/assess.py`, `scanner/core/assess.py`), or in a table of
        # its folder by its file name alone (`` `assess.py` `` in the row of `scanner/core/`).
        named = module in docs or (
            f"`{name}`" in docs and (not folder or f"scanner/{folder}/" in docs)
        )
        if not named:
            missing.append(module)
    assert missing == []


# A notes file kept outside the repository, which its readers cannot follow.
OUTSIDE = "RFC-" + "NOTES"


def test_citations_point_inside_the_repository() -> None:
    pages = [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    for path in [*pages, *PACKAGE.rglob("*.py"), *ROOT.glob("tests/**/*.py")]:
        assert OUTSIDE not in path.read_text("utf-8"), path
