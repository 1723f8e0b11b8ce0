"""Generated sections of a hand-written document: each lies between `<!-- NAME:start -->` and
`<!-- NAME:end -->` and is rewritten by one script, which leaves the rest of the document as it is."""

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
