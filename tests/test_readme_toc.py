"""The README is navigable: its table of contents lists every section and sub-section (outside
code blocks), in order, with the anchors GitHub gives them."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _headings(text: str) -> list[tuple[int, str]]:
    out, fence = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"^#{2,3} ", line) and line != "## Contents":
            level = line.index(" ")
            out.append((level, line[level + 1:].strip()))
    return out


def _anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.lower().replace("`", "")).replace(" ", "-")


def test_the_table_of_contents_lists_every_section_in_order():
    text = README.read_text(encoding="utf-8")
    toc = text[text.index("<!-- toc -->"):text.index("<!-- /toc -->")]
    entries = re.findall(r"^( *)- \[(.+)\]\(#(.+)\)$", toc, re.M)
    want = _headings(text)
    assert [(len(indent) // 2 + 2, title) for indent, title, _ in entries] == want
    seen: dict[str, int] = {}
    for (_, title, anchor) in entries:
        base = _anchor(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        assert anchor == (base if n == 0 else f"{base}-{n}")
    assert text.index("## Contents") < text.index("## Quick start on real music") < text.index("## Data layouts")


def write_toc() -> None:
    """Rewrite the README's table of contents from its headings: ``python tests/test_readme_toc.py``."""
    text = README.read_text(encoding="utf-8")
    a, b = text.index("<!-- toc -->") + len("<!-- toc -->"), text.index("<!-- /toc -->")
    seen: dict[str, int] = {}
    lines = []
    for level, title in _headings(text):
        base = _anchor(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        lines.append("  " * (level - 2) + f"- [{title}](#{base if n == 0 else f'{base}-{n}'})")
    README.write_text(text[:a] + "\n" + "\n".join(lines) + "\n" + text[b:], encoding="utf-8")


if __name__ == "__main__":
    write_toc()
