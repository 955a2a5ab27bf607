"""MkDocs hook: pages made of a repository file (README.md, BENCHMARKS.md, ...), included.

A page whose whole text is ``<!-- include: PATH -->`` (PATH relative to the repository root) is
replaced by that file. In every page, links are rewritten from the repository's layout
(``docs/x.md``, ``../BENCHMARKS.md``) to the site's, so each file is kept in one place and its
links work both on the repository and on the site.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^\s*<!--\s*include:\s*(\S+)\s*-->\s*$")
#: Repository files that are pages of the site, by their page name.
PAGES = {"README.md": "index.md", "BENCHMARKS.md": "benchmarks.md", "CHANGELOG.md": "changelog.md"}


def _site_link(target: str, page_dir: str) -> str:
    """The link to ``target`` (a path relative to the repository root) from the page's folder."""
    in_docs = target.startswith("docs/")
    target = target.removeprefix("docs/") if in_docs else PAGES.get(target, target)
    depth = page_dir.count("/") + 1 if page_dir else 0
    return "../" * depth + target


def _rewrite(text: str, source: Path, page_dir: str) -> str:
    """Rewrite the relative links of ``text`` (written at ``source``) for a page in ``page_dir``."""

    def link(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"[a-z]+:|#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve()
        if not resolved.is_relative_to(ROOT):
            return match.group(0)
        resolved = resolved.relative_to(ROOT).as_posix()
        new = _site_link(resolved, page_dir) + (f"#{anchor}" if anchor else "")
        return f"{match.group(1)}({new})"

    return re.sub(r"(\]\s?)\(([^)\s]+)\)", link, text)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace an include marker by the file it names (MkDocs calls this for every page)."""
    page_dir = str(Path(page.file.src_uri).parent).strip(".")
    match = MARKER.match(markdown)
    if not match:
        return _rewrite(markdown, ROOT / "docs" / page.file.src_uri, page_dir)
    source = ROOT / match.group(1)
    return _rewrite(source.read_text(encoding="utf-8"), source, page_dir)


#: A Sphinx cross-reference role, as the docstrings write them (Captum's convention), once
#: rendered: ``:class:`~a.b.C``` -> ``:class:<code>~a.b.C</code>``.
ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([\w.]+)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    """Show the API reference's Sphinx roles as code (``~a.b.C`` as ``C``), not as markup."""

    def code(match: re.Match[str]) -> str:
        name = match.group(2).rsplit(".", 1)[-1] if match.group(1) else match.group(2)
        return f"<code>{name}</code>"

    return ROLE.sub(code, html)
