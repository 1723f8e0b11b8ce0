"""The HTML report of several subjects: their dogs with their codes, the pairwise score matrix as a
heatmap, per-term detail and, for pairs of models, the whole-depth lineage map behind their verdict.
One self-contained file (pictures inlined as PNG data URIs, no script)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass

import huref
from huref.comparison import Plan, dog_reads, plan_pairs, score
from huref.errors import HurefError
from huref.inputs import Settings, Subject, latent_version
from huref.lineage import VERDICT_LAYERS
from huref.render import DEFAULT_TRUNCATION, draw_dog, latent_code, png_bytes, render, side_by_side
from huref.results import PCS_NOTE, Match, TermsComparison, panel_note

STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 6px 10px; text-align: center; }
th.name { text-align: left; }
.dogs { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.dog { text-align: center; width: 256px; font-size: 0.9em; overflow-wrap: anywhere; }
.dog img { width: 256px; height: 256px; border: 1px solid #ccc; }
.code { font-family: monospace; font-size: 1.25em; letter-spacing: 0.05em; margin: 0.3em 0; }
.map { font-size: 0.9em; max-width: 100%; }
.map img { max-width: 100%; }
.note { color: #666; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Failed:
    """A pair that could not be compared, with the one-line reason."""

    error: str


def heat(value: float) -> str:
    """Background colour for a score in [-1, 1]: white at 0 and below, light green at 1."""
    t = max(0.0, min(1.0, value))
    return f"rgb({int(255 - 140 * t)}, {int(255 - 50 * t)}, {int(255 - 140 * t)})"


HOW = {"lineage": "ICS; lineage verdict", "latent panel": "latent cosine, calibrated", "ics panel": "ICS, calibrated",
       "threshold": "ICS thresholds"}


def _score_cell(m: Match | Failed) -> str:
    if isinstance(m, Failed):
        return f"<td class='note' title='{html.escape(m.error)}'>n/a</td>"
    mark = " &#10003;" if m.derives else ""
    how = HOW[m.decided_by]
    return (f"<td style='background: {heat(m.score)}' title='{how}'>"
            f"{m.score:+.3f}{mark}<br><span class='note'>{how}</span></td>")


def _decision_cell(m: Match) -> str:
    """What decided a pair: the calibrated lineage, latent or ICS verdict (z, p), or a threshold."""
    if m.decided_by == "threshold":
        return f"<td>{m.comparison.score_name} &ge; {m.threshold:.2f}</td>"
    name = "lineage" if m.decided_by == "lineage" else m.comparison.score_name
    return f"<td>{name} {html.escape(m.comparison.judgement.evidence())}</td>"


def _lineage_maps(names: list[str], matrix: dict) -> list[str]:
    """The layer-map heatmap of each pair decided by lineage, as HTML."""
    pairs = [(i, j, m) for (i, j), m in sorted(matrix.items()) if isinstance(m, Match) and m.decided_by == "lineage"]
    if not pairs:
        return []
    out = ["<h2>Lineage maps</h2><p class='note'>Per pair of models: the similarity (ICS) of every layer read of "
           "the first (rows) against every layer read of the second (columns), labelled with their layer "
           "indices; red outline: the layers traced to each other; grey bar: a layer traced to neither. "
           f"The verdict reads at most {VERDICT_LAYERS} evenly spaced layers of each model (<code>huref lineage"
           "</code> reads every layer).</p><div class='dogs'>"]
    for i, j, m in pairs:
        found = m.comparison.lineage
        png = png_bytes(found.image())
        out.append(f"<div class='map'><img alt='lineage map of {names[i]} and {names[j]}' "
                   f"src='data:image/png;base64,{base64.b64encode(png).decode()}'><br>{i + 1}. {names[i]} (rows) "
                   f"vs {j + 1}. {names[j]} (columns): {found.verdict}, "
                   f"{html.escape(found.judgement.evidence())}</div>")
    out.append("</div>")
    return out


def build_report(subjects: list[Subject], pictures: list[bytes], codes: list[str], matrix: dict) -> str:
    """The report's HTML. pictures: each subject's dog (PNG), codes: their latent codes; matrix:
    {(i, j): Match or Failed} for i < j."""
    names = [html.escape(s.label) for s in subjects]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>huref report</title>",
           f"<style>{STYLE}</style></head><body>", "<h1>huref fingerprint report</h1>",
           f"<p class='note'>huref {huref.__version__}. Same base model, same-looking dog. Scores: ICS "
           "(invariant-terms cosine) where both sides have terms, latent cosine where one is a published "
           "fingerprint.</p>", "<h2>Fingerprints</h2><p class='note'>Under each dog, its latent's code: compare "
           "two codes place by place; relatives' codes agree in more places than strangers' (a reading aid, "
           "not a verdict).</p><div class='dogs'>"]
    for i, (name, subject, png, code) in enumerate(zip(names, subjects, pictures, codes)):
        data = base64.b64encode(png).decode()
        source = html.escape(label_source(subject))
        out.append(f"<div class='dog'><img alt='dog of {name}' src='data:image/png;base64,{data}'>"
                   f"<div class='code'>{code}</div>{i + 1}. {name}<br><span class='note'>{subject.kind}"
                   f"{': ' + source if source else ''}</span></div>")
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
               "lineage statistic; otherwise the calibrated ICS or latent verdict, or the score at or above its "
               "threshold); n/a: the pair could not be compared (the reason is in the detail table).</p>")
    out.append("<h2>Per-term detail</h2><table><tr><th>pair</th><th>score</th><th>decided by</th><th>verdict</th>"
               "<th>qk</th><th>vo</th><th>ffn</th><th>per layer (A / B: ICS)</th><th>PCS</th>"
               "<th>common tokens</th></tr>")
    for (i, j), m in sorted(matrix.items()):
        pair = f"<th class='name'>{i + 1} vs {j + 1}</th>"
        if isinstance(m, Failed):
            out.append(f"<tr>{pair}<td colspan='9' class='note'>not compared: {html.escape(m.error)}</td></tr>")
            continue
        c = m.comparison
        if isinstance(c, TermsComparison):
            terms = "".join(f"<td style='background: {heat(v)}'>{v:+.3f}</td>" for v in c.term_ics.values())
            layers = ", ".join(f"{a} / {b}: {v:+.3f}" for a, b, v in c.layer_ics)
            pcs = "n/a" if c.pcs is None else f"{c.pcs:+.3f}"
            extra = f"{terms}<td>{layers}</td><td>{pcs}</td><td>{c.n_common_tokens}</td>"
        else:
            extra = f"<td colspan='6' class='note'>{html.escape(c.note)}</td>"
        out.append(f"<tr>{pair}<td style='background: {heat(m.score)}'>{c.score_name} {m.score:+.4f}</td>"
                   f"{_decision_cell(m)}<td>{m.verdict}</td>{extra}</tr>")
    out.append("</table>")
    judged = [m.comparison.judgement for m in matrix.values()
              if isinstance(m, Match) and m.comparison.judgement.calibrated]
    if judged:
        out.append(f"<p class='note'>{html.escape(panel_note(*judged))}</p>")
    out.append(f"<p class='note'>{html.escape(PCS_NOTE)}.</p>")
    out += _lineage_maps(names, matrix)
    out.append("</body></html>\n")
    return "\n".join(out)


def label_source(subject: Subject) -> str:
    """A file subject's file name when its label is the model name it holds ('' otherwise): never a folder."""
    from pathlib import Path

    name = Path(subject.spec).name
    return name if subject.made_with() is not None and name != subject.label else ""


def score_all(subjects: list[Subject], settings: Settings) -> dict:
    """Every pair's Match, or Failed for a pair that cannot be compared; at most two subjects' terms
    are in memory at a time. Pairs are judged by the settings' policy (two models by lineage unless
    --verdict ics)."""
    matrix = {}
    for i in range(len(subjects)):
        for j in range(i + 1, len(subjects)):
            try:
                matrix[(i, j)] = score(subjects[i], subjects[j], settings)
            except HurefError as e:
                matrix[(i, j)] = Failed(str(e))
            subjects[j].forget()
        subjects[i].forget()
    return matrix


def plan_report(subjects: list[Subject], settings: Settings) -> Plan:
    """Every pair's reads (each subject's terms and, for pairs of models judged by lineage, their
    whole-depth terms), then each subject's latent, its dog (`huref.comparison.dog_reads`)."""
    pairs = plan_pairs([(subjects[i], subjects[j], settings)
                        for i in range(len(subjects)) for j in range(i + 1, len(subjects))])
    return Plan.of(list(pairs.reads) + dog_reads(subjects, settings))


def make_report(subjects: list[Subject], generator, settings: Settings, truncation: float = DEFAULT_TRUNCATION,
                progress=None) -> str:
    """Score every pair and render every dog (subjects opened and matched by the caller); the HTML.

    Each read of `plan_report` is computed once; terms are spilled to a private temporary folder
    (removed at the end), latents kept (they are small), so memory holds two subjects' terms at a
    time whatever their number."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="huref-report-") as scratch:
        for k, read in enumerate(plan_report(subjects, settings).reads):
            read.compute(progress)
            if read.latent is None:
                read.subject.spill(read.settings, f"{scratch}/{k}.safetensors")
            read.subject.forget()
        matrix = score_all(subjects, settings)
    if progress:
        progress("rendering")
    latents = [s.latent(settings) for s in subjects]
    pictures = [png_bytes(draw_dog(z, generator, truncation)) for z in latents]
    return build_report(subjects, pictures, [latent_code(z) for z in latents], matrix)


def comparison_image(a: Subject, b: Subject, settings: Settings, score_line: str, generator,
                     truncation: float = DEFAULT_TRUNCATION):
    """The two subjects' dogs side by side, labelled, with score_line under them (a PIL image): the
    latents of the encoder version they are compared in (`huref.inputs.latent_version`)."""
    version = latent_version(a, b)
    return side_by_side(render(a.latent(settings, version), generator, truncation),
                        render(b.latent(settings, version), generator, truncation), a.label, b.label, score_line)
