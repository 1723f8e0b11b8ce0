"""The HTML report of several subjects: their dogs, the pairwise score matrix as a heatmap,
per-term detail and, for pairs of models, the whole-depth lineage map behind their verdict. One self-contained file (pictures inlined as PNG data URIs, no script)."""

from __future__ import annotations

import base64
import html
from dataclasses import replace

import huref
from huref.comparison import judgement, score
from huref.errors import HurefError
from huref.inputs import Settings, Subject
from huref.render import DEFAULT_TRUNCATION, png_bytes, render, side_by_side

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


def heat(value: float) -> str:
    """Background colour for a score in [-1, 1]: white at 0 and below, light green at 1."""
    t = max(0.0, min(1.0, value))
    return f"rgb({int(255 - 140 * t)}, {int(255 - 50 * t)}, {int(255 - 140 * t)})"


def _score_cell(m: dict) -> str:
    if "error" in m:
        return f"<td class='note' title='{html.escape(m['error'])}'>n/a</td>"
    mark = " &#10003;" if m["derives"] else ""
    how = {"lineage": f"{m['kind']}, lineage verdict", "latent panel": "latent, calibrated",
           "ics panel": "ics, calibrated"}.get(m["decided_by"], m["kind"])
    return (f"<td style='background: {heat(m['score'])}' title='{how}'>"
            f"{m['score']:+.3f}{mark}<br><span class='note'>{how}</span></td>")


def _decision_cell(m: dict) -> str:
    """What decided a pair: its threshold, the calibrated lineage statistic of two models, or the
    calibrated latent or ICS verdict."""
    found = judgement(m)
    if found is None:
        return f"<td>{m['threshold']:.2f}</td>"
    name = "lineage" if m["decided_by"] == "lineage" else m["kind"]
    return f"<td>{name} z {found['z']:+.1f}, p {found['p_value']:.2g}</td>"


def _lineage_maps(names: list[str], matrix: dict) -> list[str]:
    """The layer-map heatmap of each pair decided by lineage, as HTML."""
    from huref.lineage import result_image

    pairs = [(i, j, m) for (i, j), m in sorted(matrix.items()) if m.get("decided_by") == "lineage"]
    if not pairs:
        return []
    out = ["<h2>Lineage maps</h2><p class='note'>Per pair of models: cosine of every layer of the first "
           "(rows) against every layer of the second (columns); red: the layers traced to each other; grey "
           "bar: a layer traced to none.</p><div class='dogs'>"]
    for i, j, m in pairs:
        png = png_bytes(result_image(m["detail"]["lineage"], (f"{i + 1}", f"{j + 1}")))
        out.append(f"<div><img alt='lineage map of {i + 1} and {j + 1}' src='data:image/png;base64,"
                   f"{base64.b64encode(png).decode()}'><br>{i + 1}. {names[i]} vs {j + 1}. {names[j]}: "
                   f"{m['detail']['lineage']['verdict']}</div>")
    out.append("</div>")
    return out


def build_report(subjects: list[Subject], pictures: list[bytes], matrix: dict) -> str:
    """The report's HTML. matrix: {(i, j): score() result, or {"error": message}} for i < j."""
    names = [html.escape(s.label) for s in subjects]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>huref report</title>",
           f"<style>{STYLE}</style></head><body>", "<h1>huref fingerprint report</h1>",
           f"<p class='note'>huref {huref.__version__}. Same base model, same-looking dog. Scores: ICS "
           "(invariant-terms cosine) where both sides have terms, latent cosine where one is a published "
           "fingerprint.</p>", "<h2>Fingerprints</h2><div class='dogs'>"]
    for i, (name, subject, png) in enumerate(zip(names, subjects, pictures)):
        data = base64.b64encode(png).decode()
        out.append(f"<div class='dog'><img alt='dog of {name}' src='data:image/png;base64,{data}'><br>"
                   f"{i + 1}. {name}<br><span class='note'>{subject.kind}</span></div>")
    out.append("</div><h2>Similarity matrix</h2><table><tr><th></th>")
    out += [f"<th>{i + 1}</th>" for i in range(len(subjects))]
    out.append("</tr>")
    for i, name in enumerate(names):
        out.append(f"<tr><th class='name'>{i + 1}. {name}</th>")
        for j in range(len(subjects)):
            if i == j:
                out.append("<td style='background: #eee'>&mdash;</td>")
            else:
                out.append(_score_cell(matrix[(min(i, j), max(i, j))]))
        out.append("</tr>")
    out.append("</table><p class='note'>&#10003;: same base (two models: by the calibrated whole-depth "
               "lineage statistic; otherwise the score at or above its threshold); n/a: the pair could "
               "not be compared (the reason is in the detail table).</p>")
    out.append("<h2>Per-term detail</h2><table><tr><th>pair</th><th>score</th><th>decided by</th><th>verdict</th>"
               "<th>qk</th><th>vo</th><th>ffn</th><th>per layer</th><th>common tokens</th></tr>")
    for (i, j), m in sorted(matrix.items()):
        pair = f"<th class='name'>{i + 1} vs {j + 1}</th>"
        if "error" in m:
            out.append(f"{'<tr>'}{pair}<td colspan='8' class='note'>not compared: {html.escape(m['error'])}</td></tr>")
            continue
        detail = m["detail"]
        if m["kind"] == "ics":
            terms = "".join(f"<td style='background: {heat(v)}'>{v:+.3f}</td>" for v in detail["terms"].values())
            layers = ", ".join(f"{v:+.3f}" for v in detail["layers"])
            extra = f"{terms}<td>{layers}</td><td>{detail['n_common_tokens']}</td>"
        else:
            extra = f"<td colspan='5' class='note'>{html.escape(detail['note'])}</td>"
        out.append(f"<tr>{pair}<td style='background: {heat(m['score'])}'>{m['kind']} {m['score']:+.4f}</td>"
                   f"{_decision_cell(m)}<td>{detail['verdict']}</td>{extra}</tr>")
    out.append("</table>")
    out += _lineage_maps(names, matrix)
    out.append("</body></html>\n")
    return "\n".join(out)


def score_all(subjects: list[Subject], settings: Settings, lineage_tokens: int | None = None) -> dict:
    """Every pair's score() result, or {"error": message} for a pair that cannot be compared; at
    most two subjects' terms are in memory at a time. With `lineage_tokens`, a pair of models is
    judged by the calibrated lineage verdict (as `compare` does); files keep their thresholds."""
    matrix = {}
    for i in range(len(subjects)):
        for j in range(i + 1, len(subjects)):
            try:
                matrix[(i, j)] = score(subjects[i], subjects[j], settings, lineage_tokens=lineage_tokens)
            except HurefError as e:
                matrix[(i, j)] = {"error": str(e)}
            subjects[j].forget()
        subjects[i].forget()
    return matrix


def make_report(subjects: list[Subject], generator, settings: Settings, truncation: float = DEFAULT_TRUNCATION,
                progress=None, lineage_tokens: int | None = None) -> str:
    """Score every pair and render every dog (subjects opened and matched by the caller); the HTML.
    With `lineage_tokens`, pairs of models are judged by the lineage verdict and their layer maps shown.

    Each model's terms (and whole-depth terms) are computed once, encoded, and spilled to a private
    temporary folder (removed at the end), so memory holds two subjects' terms at a time whatever
    their number."""
    import tempfile

    from huref.comparison import lineage_settings, lineage_terms

    whole_depth = replace(settings, n_tokens=lineage_tokens) if lineage_tokens else None
    with tempfile.TemporaryDirectory(prefix="huref-report-") as scratch:
        for i, subject in enumerate(subjects):
            if subject.has_terms:
                subject.terms(settings, progress)
                subject.record(settings)  # the latent, kept: it is small
                subject.spill(settings, f"{scratch}/{i}.safetensors")
            if whole_depth and subject.kind == "model":
                lineage_terms(subject, whole_depth, progress=progress)
                subject.spill(lineage_settings(subject, whole_depth), f"{scratch}/{i}-depth.safetensors")
        matrix = score_all(subjects, settings, lineage_tokens)
    if progress:
        progress("rendering")
    pictures = [png_bytes(render(s.latent(settings), generator, truncation)) for s in subjects]
    return build_report(subjects, pictures, matrix)


def comparison_image(a: Subject, b: Subject, settings: Settings, score_line: str, generator,
                     truncation: float = DEFAULT_TRUNCATION):
    """The two subjects' dogs side by side, labelled, with score_line under them (a PIL image)."""
    return side_by_side(render(a.latent(settings), generator, truncation),
                        render(b.latent(settings), generator, truncation), a.label, b.label, score_line)
