"""Generated sections of a hand-written document, each rewritten by one script that leaves the rest of
the document as it is: between `<!-- NAME:start -->` and `<!-- NAME:end -->` (`replace_section`), or,
in a document without markers, from a heading to the next one (`insert_section`)."""

from pathlib import Path

from huref.errors import HurefError

RESULTS_SECTIONS = ("evidence", "lineage", "which-layers", "real-lineage")  # docs/RESULTS.md's, in order


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(doc: Path, name: str, text: str, order: tuple[str, ...] = RESULTS_SECTIONS) -> None:
    """Put `text` between the markers of section `name` of `doc`. A missing `doc` starts as the empty
    markers of every section of `order`; a `doc` without the markers is an error (one line)."""
    if not doc.exists():
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text("\n\n".join("\n".join(markers(n)) for n in order) + "\n")
    content = doc.read_text()
    start, end = markers(name)
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise HurefError(f"{doc}: needs exactly one {start} ... {end} pair (where the section goes)")
    head, rest = content.split(start)
    tail = rest.split(end)[1]
    doc.write_text(f"{head}{start}\n{text.strip()}\n{end}{tail}")


def insert_section(doc: Path, text: str, heading: str) -> None:
    """Replace the `heading` section of `doc` (up to the next "## " heading or "<!-- " marker), or add it
    before "## Timings" (else at the end)."""
    lines = doc.read_text().split("\n") if doc.exists() else []
    if heading in lines:
        start = lines.index(heading)
        end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith(("## ", "<!-- "))), len(lines))
    else:
        start = end = lines.index("## Timings") if "## Timings" in lines else len(lines)
    lines[start:end] = text.rstrip("\n").split("\n") + [""]
    doc.write_text("\n".join(lines))
