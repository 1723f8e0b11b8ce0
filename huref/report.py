"""The HTML report of several subjects: their dogs, the pairwise score matrix as a heatmap, and
per-term detail. One self-contained file (pictures inlined as PNG data URIs, no script)."""

from __future__ import annotations

import base64
import html

import huref
from huref.generators import load_generator
from huref.render import DEFAULT_TRUNCATION, png_bytes, render, save_png, side_by_side
from huref.verify import Subject, open_subject, score

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 6px 10px; text-align: center; }
th.name { text-align: left; }
.dogs { display: flex; flex-wrap: wrap; gap: 1.5em; }
.dog { text-align: center; width: 200px; font-size: 0.85em; word-break: break-all; }
.dog img { width: 200px; height: 200px; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #666; font-size: 0.9em; }
"""


def open_subjects(specs: list[str], progress=None, **open_kwargs) -> list[Subject]:
    """Open every spec; models are computed with the settings of the first file among them."""
    subjects, like = [], None
    for spec in specs:
        if progress:
            progress(f"opening {spec}")
        subject = open_subject(spec, like=like, **open_kwargs)
        if like is None and subject.kind != "model":
            like = subject
        subjects.append(subject)
    return subjects


def heat(value: float) -> str:
    """Background colour for a score in [-1, 1]: white at 0 and below, light green at 1."""
    t = max(0.0, min(1.0, value))
    return f"rgb({int(255 - 140 * t)}, {int(255 - 50 * t)}, {int(255 - 140 * t)})"


def build_report(subjects: list[Subject], pictures: list[bytes], matrix: dict) -> str:
    """The report's HTML. matrix: {(i, j): score() result} for i < j."""
    names = [html.escape(s.spec) for s in subjects]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>huref report</title>",
           f"<style>{STYLE}</style></head><body>", "<h1>huref fingerprint report</h1>",
           f"<p class='note'>huref {huref.__version__}. Same base model, same-looking dog. Scores: ICS "
           "(invariant-terms cosine) where both sides have terms, latent cosine where one is a published "
           "fingerprint.</p>", "<h2>Fingerprints</h2><div class='dogs'>"]
    for name, subject, png in zip(names, subjects, pictures):
        data = base64.b64encode(png).decode()
        out.append(f"<div class='dog'><img alt='dog of {name}' src='data:image/png;base64,{data}'><br>"
                   f"{name}<br><span class='note'>{subject.kind}</span></div>")
    out.append("</div><h2>Similarity matrix</h2><table><tr><th></th>")
    out += [f"<th>{i + 1}</th>" for i in range(len(subjects))]
    out.append("</tr>")
    for i, name in enumerate(names):
        out.append(f"<tr><th class='name'>{i + 1}. {name}</th>")
        for j in range(len(subjects)):
            if i == j:
                out.append("<td style='background: #eee'>&mdash;</td>")
                continue
            m = matrix[(min(i, j), max(i, j))]
            mark = " &#10003;" if m["derives"] else ""
            out.append(f"<td style='background: {heat(m['score'])}' title='{m['kind']}'>"
                       f"{m['score']:+.3f}{mark}<br><span class='note'>{m['kind']}</span></td>")
        out.append("</tr>")
    out.append("</table><p class='note'>&#10003;: at or above the threshold (same base).</p>")
    out.append("<h2>Per-term detail</h2><table><tr><th>pair</th><th>score</th><th>threshold</th>"
               "<th>qk</th><th>vo</th><th>ffn</th><th>per layer</th><th>common tokens</th></tr>")
    for (i, j), m in sorted(matrix.items()):
        detail = m["detail"]
        if m["kind"] == "ics":
            terms = "".join(f"<td style='background: {heat(v)}'>{v:+.3f}</td>" for v in detail["terms"].values())
            layers = ", ".join(f"{v:+.3f}" for v in detail["layers"])
            extra = f"{terms}<td>{layers}</td><td>{detail['n_common_tokens']}</td>"
        else:
            extra = f"<td colspan='5' class='note'>{html.escape(detail['note'])}</td>"
        out.append(f"<tr><th class='name'>{i + 1} vs {j + 1}</th><td style='background: {heat(m['score'])}'>"
                   f"{m['kind']} {m['score']:+.4f}</td><td>{m['threshold']:.2f}</td>{extra}</tr>")
    out.append("</table></body></html>\n")
    return "\n".join(out)


def make_report(specs: list[str], generator: str | None = None, truncation: float = DEFAULT_TRUNCATION,
                progress=None, **open_kwargs) -> str:
    """Open the subjects, score every pair, render every dog; returns the report's HTML."""
    G, _, _ = load_generator(generator)
    subjects = open_subjects(specs, progress=progress, **open_kwargs)
    if progress:
        progress("scoring pairs")
    matrix = {(i, j): score(subjects[i], subjects[j])
              for i in range(len(subjects)) for j in range(i + 1, len(subjects))}
    if progress:
        progress("rendering")
    pictures = [png_bytes(render(s.latent(), G, truncation)) for s in subjects]
    return build_report(subjects, pictures, matrix)


def comparison_image(a: Subject, b: Subject, score_line: str, path, generator: str | None = None,
                     truncation: float = DEFAULT_TRUNCATION) -> None:
    """Write the two subjects' dogs side by side, labelled, with score_line under them (PNG)."""
    G, _, _ = load_generator(generator)
    picture = side_by_side(render(a.latent(), G, truncation), render(b.latent(), G, truncation),
                           a.spec, b.spec, score_line)
    save_png(picture, path)
