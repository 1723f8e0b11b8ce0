"""The `huref` command line: each command opens its arguments, scores them, and prints.

Exit codes: 0 success; 1 a check that ran and said no (`verify`); 2 bad input or usage (one line on
stderr, no traceback, no output file left behind); 3 an internal error (a bug: please report it;
HUREF_DEBUG=1 shows the traceback) or an installation fault; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

import huref
from huref.errors import HurefError, InstallationError
from huref.files import write_all
from huref.progress import Progress

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """'-2,-1' or '30,31' -> (ints); None when not given."""
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip()) or None
    except ValueError:
        raise HurefError(f"--layers takes comma-separated integers, not '{text[:80]}'") from None


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True, help="No progress or notices on stderr.")(f)


def settings_options(f=None, *, whole_depth: bool = False):
    """The options every command that computes terms shares, collapsed into one `settings` argument
    (a frozen huref.inputs.Settings). `whole_depth` (lineage: every layer): no --layers, and
    huref.lineage.LINEAGE_TOKENS tokens by default."""
    if f is None:
        return functools.partial(settings_options, whole_depth=whole_depth)
    from huref.invariants import DEFAULT_TOKENS
    from huref.lineage import LINEAGE_TOKENS

    @functools.wraps(f)
    def command(n_tokens, revision, device, precision, quiet, layers=None, **kwargs):
        from huref.inputs import Settings

        settings = Settings(n_tokens=n_tokens, layers=parse_layers(layers), revision=revision, device=device,
                            precision=precision, quiet=quiet)
        return f(settings=settings, **kwargs)

    layer_option = click.option("--layers", default=None, help="Comma-separated layer indices; negative count from "
                                "the end. Default: the two middle layers that write (attention layers in hybrids); "
                                "-2,-1 is the paper's choice, the last two.")
    for option in reversed((
        click.option("--tokens", "n_tokens", type=int, default=LINEAGE_TOKENS if whole_depth else DEFAULT_TOKENS, show_default=True,
                     help="Number of probe tokens (capped by the vocabulary)."),
        *(() if whole_depth else (layer_option,)),
        click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for hub models."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
                     help="Arithmetic of the terms; float64 is a slower check mode."),
        quiet_option,
    )):
        command = option(command)
    return command


def generator_options(f):
    """--generator and --truncation, for every command that draws dogs."""
    from huref.render import DEFAULT_TRUNCATION

    f = click.option("--truncation", type=click.FloatRange(0, 1), default=DEFAULT_TRUNCATION,
                     help="Truncation psi; lower gives cleaner, more alike dogs. Default: the generator's "
                          "(AFHQ-dog: the paper's 0.5 on the first 8 style inputs; bundled: docs/GENERATOR.md).")(f)
    return click.option("--generator", default=None,
                        help="bundled, afhqdog (once downloaded) or a generator file. "
                             "Default: afhqdog when downloaded, else bundled.")(f)


def image_format(path) -> str:
    """PIL format name for an image output path (by suffix), refused before any work if unknown."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in IMAGE_FORMATS:
        raise HurefError(f"{path}: an image output must end in .png, .jpg or .jpeg")
    return IMAGE_FORMATS[suffix]


def image_bytes(picture, path) -> bytes:
    """picture encoded for path's suffix (PNG without metadata; JPEG at quality 95): same pixels, same bytes."""
    import io

    from huref.render import png_bytes

    if image_format(path) == "PNG":
        return png_bytes(picture)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


class Run:
    """What one command run shares: its settings, progress bar and notices (both silenced by -q)."""

    def __init__(self, title: str, quiet: bool) -> None:
        self.title, self.quiet, self.notices = title, quiet, []
        self.progress: Progress | None = None

    def start(self, total: int) -> "Run":
        self.progress = Progress(self.title, total, enabled=not self.quiet)
        return self

    def step(self, name: str) -> None:
        if self.progress is not None:
            self.progress.step(name)

    def notice(self, text: str | None) -> None:
        if text:
            self.notices.append(text)

    def finish(self) -> None:
        """Close the progress bar and say the notices (after the work, never before an error)."""
        if self.progress is not None:
            self.progress.close()
        if not self.quiet:
            for text in self.notices:
                click.echo(f"huref: note: {text}", err=True)


def open_all(specs: list[str], settings) -> tuple[list, object]:
    """Open every argument and match settings across them, before any expensive work."""
    from huref.inputs import open_subject, settings_for

    subjects = [open_subject(spec, settings) for spec in specs]
    return subjects, settings_for(subjects, settings)


def load_dog_generator(choice, run: Run):
    """(generator, identity) for --generator, with the fallback notice queued on the run."""
    from huref.generators import load_generator

    generator, info, notice = load_generator(choice)
    run.notice(notice)
    return generator, info


def finite_json(report) -> str:
    """One JSON object; a non-finite number (not JSON) is an error, never printed."""
    try:
        return json.dumps(report, allow_nan=False)
    except ValueError:
        raise HurefError("a score is not a finite number (the inputs hold values too large to compare)") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(huref.__version__, prog_name="huref")
def cli() -> None:
    """Human-readable fingerprints of large language models, from their weights alone (HuRef)."""


@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Output .safetensors file.")
@settings_options
def invariants(model, output, settings):
    """Compute MODEL's private invariant terms and write them to OUTPUT (do not publish them)."""
    from huref.inputs import check_outputs
    from huref.invariants import terms_chunks

    run = Run("invariants", settings.quiet)
    subjects, settings = open_all([model], settings)
    if subjects[0].kind != "model":
        raise HurefError(f"{model}: not a model")
    check_outputs([output], subjects)
    terms = subjects[0].terms(settings, run.start(subjects[0].steps(settings)).step)
    write_all([(output, terms_chunks(terms))])
    run.finish()
    if not settings.quiet:
        click.echo(f"wrote {output}: {len(terms.layers)} layers x 3 terms over {len(terms.tokens)} tokens", err=True)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--image", default=None, help="Also write the two dogs side by side with the score (.png or .jpg).")
@click.option("--verdict", "verdict_from", type=click.Choice(["lineage", "ics"]), default="lineage", show_default=True,
              help="For two models: lineage = the calibrated whole-depth statistic (reads every layer at "
                   "the lineage token count); ics = the two-layer ICS thresholds (faster).")
@generator_options
@settings_options
def compare(a, b, as_json, image, verdict_from, generator, truncation, settings):
    """Compare A and B (each a model, an invariants file or a fingerprint FP.json): ICS, per term and
    layer, PCS, verdict; with a fingerprint, the latent cosine."""
    from huref.comparison import compare_pair
    from huref.inputs import check_outputs, latent_version

    run = Run("compare", settings.quiet)
    if image:
        image_format(image)
    subjects, settings = open_all([a, b], settings)
    check_outputs([image] if image else [], subjects)
    dog_generator = load_dog_generator(generator, run)[0] if image else None
    lineage_tokens = lineage_token_count(subjects, settings, verdict_from)
    both_terms = all(s.has_terms for s in subjects)  # else latents are compared: the terms the encoder reads
    run.start(sum(s.steps(settings) if both_terms else s.latent_steps(settings, latent_version(*subjects))
                  for s in subjects) + lineage_steps(subjects, settings, lineage_tokens) + (1 if image else 0))
    for subject in subjects:
        if subject.has_terms and both_terms:
            subject.terms(settings, run.step)
    report = compare_pair(*subjects, settings, lineage_tokens, run.step)
    text = finite_json(report)
    if image:
        from huref.report import comparison_image

        run.step("drawing")
        score = (f"ICS {report['ics']:+.4f}" if "ics" in report else f"latent cosine {report['latent_cosine']:+.4f}")
        picture = comparison_image(*subjects, settings, f"{score}  ({report['verdict']})", dog_generator, truncation)
        write_all([(image, image_bytes(picture, image))])
    run.finish()
    click.echo(text if as_json else format_report(report))


@cli.command()
@quiet_option
def demo(quiet):
    """Build three tiny models on the spot (a base, a disguised fine-tune of it, an unrelated one)
    and compare them: the main job, end to end, with no download."""
    from huref.comparison import compare_pair
    from huref.inputs import Settings

    settings = Settings(quiet=quiet)
    run = Run("demo", quiet)
    subjects, settings = open_all([f"demo:{name}" for name in ("base", "offspring", "independent")], settings)
    lineage_tokens = lineage_token_count(subjects, settings, "lineage")
    run.start(sum(s.steps(settings) for s in subjects) + lineage_steps(subjects, settings, lineage_tokens))
    for subject in subjects:
        subject.terms(settings, run.step)
    reports = [compare_pair(subjects[0], other, settings, lineage_tokens, run.step) for other in subjects[1:]]
    run.finish()
    for other, report in zip(subjects[1:], reports):
        click.echo(f"demo:base vs {other.spec:<17} ICS {report['ics']:+.4f}  "
                   f"(qk {report['terms']['qk']:+.3f}, vo {report['terms']['vo']:+.3f}, "
                   f"ffn {report['terms']['ffn']:+.3f})  PCS {report['pcs']:+.4f}  "
                   f"lineage z {report['lineage']['z']:+.1f}  -> {report['verdict']}")


def lineage_token_count(subjects, settings, verdict_from: str) -> int | None:
    """The token count of the whole-depth terms behind the calibrated verdict (the lineage default,
    never more than --tokens asks for), or None when it is not used (the ICS verdict asked for, or not
    all models)."""
    from huref.lineage import LINEAGE_TOKENS

    all_models = all(s.kind == "model" for s in subjects)
    return min(LINEAGE_TOKENS, settings.n_tokens) if all_models and verdict_from == "lineage" else None


def lineage_steps(subjects, settings, lineage_tokens, stride: int | None = None) -> int:
    """Progress steps of the whole-depth terms of two models (0 when not used); stride None: the
    verdict's sample of layers."""
    from dataclasses import replace

    from huref.comparison import lineage_settings

    if not lineage_tokens:
        return 0
    return sum(s.steps(lineage_settings(s, replace(settings, n_tokens=lineage_tokens), stride)) for s in subjects)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("-o", "--output", default=None, help="Also write the layer-by-layer map as an image (.png or .jpg).")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True,
              help="Read every STRIDE-th layer (faster; the null panel was calibrated at 1).")
@settings_options(whole_depth=True)
def lineage(a, b, as_json, output, stride, settings):
    """Which layers of model B come from which layers of model A, over the whole depth: the layer map,
    its alignment, and a calibrated verdict (statistic, z, p-value, false-positive rate)."""
    from huref.comparison import check_models, lineage_pair
    from huref.inputs import check_outputs
    from huref.lineage import result_image

    run = Run("lineage", settings.quiet)
    if output:
        image_format(output)
    subjects, settings = open_all([a, b], settings)
    check_models(*subjects)
    check_outputs([output] if output else [], subjects)
    run.start(lineage_steps(subjects, settings, settings.n_tokens, stride))
    found = lineage_pair(*subjects, settings, stride, run.step)
    text = finite_json({"a": subjects[0].label, "b": subjects[1].label, **found})
    if output:
        picture = result_image(found, (subjects[0].label, subjects[1].label))
        write_all([(output, image_bytes(picture, output))])
    run.finish()
    click.echo(text if as_json else format_lineage(found, subjects[0].label, subjects[1].label))


def format_lineage(found: dict, label_a: str, label_b: str) -> str:
    """A readable account of a lineage result: where each layer of B comes from, then the verdict."""
    where_a = {layer: k for k, layer in enumerate(found["layers_a"])}
    where_b = {layer: k for k, layer in enumerate(found["layers_b"])}
    lines = [f"A: {label_a} ({len(found['layers_a'])} layers read)", f"B: {label_b} ({len(found['layers_b'])} layers read)",
             "", "B layer  from A layer  similarity"]
    for i, j in found["alignment"]:
        if i is None:
            lines.append(f"{j:>7}  {'-':>12}  (from neither)")
        else:
            lines.append(f"{j:>7}  {i:>12}  {found['map'][where_a[i]][where_b[j]]:+.3f}")
    lines.append("")
    lines.append(f"statistic {found['statistic']:+.4f}   z {found['z']:+.1f}   p {found['p_value']:.2g}   "
                 f"verdict: {found['verdict']} (false-positive rate {found['fpr']:g} under the null panel)")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """A readable table of a comparison report (terms or latents)."""
    lines = []
    for tag in ("a", "b"):
        side = report[tag]
        lines.append(f"{tag.upper()}: {side['source']}  ({side['kind']}, {side['model_type']}, "
                     f"layers {side['layers']}, {side['n_tokens']} tokens)")
    if "latent_cosine" in report:
        lines.append(f"note: {report['note']}")
        lines.append(f"latent cosine {report['latent_cosine']:+.4f}   z {report['z']:+.1f}   p {report['p_value']:.2g}   "
                     f"verdict: {report['verdict']} (same-base from {report['threshold']:+.3f}: false-positive rate "
                     f"{report['fpr']:g} under the latent null panel)")
        return "\n".join(lines)
    lines.append(f"common probe tokens: {report['n_common_tokens']}")
    lines.append("")
    lines.append("term     ICS")
    for name, value in report["terms"].items():
        lines.append(f"{name:<8} {value:+.4f}")
    for i, value in enumerate(report["layers"]):
        lines.append(f"layer {report['a']['layers'][i]:<3}{value:+.4f}")
    lines.append("")
    pcs = "n/a" if report["pcs"] is None else f"{report['pcs']:+.4f}"
    if "lineage" in report:
        found = report["lineage"]
        lines.append(f"lineage over the whole depth: statistic {found['statistic']:+.4f}   z {found['z']:+.1f}   "
                     f"p {found['p_value']:.2g}   (ICS thresholds alone: {report['ics_verdict']})")
    judged = report["ics_judgement"]
    how = (f"z {judged['z']:+.1f}, p {judged['p_value']:.2g} against the ICS null panel" if judged["decided_by"] == "ics panel"
           else "the fixed ICS thresholds")
    lines.append(f"ICS {report['ics']:+.4f} ({how})   PCS {pcs}   verdict: {report['verdict']}")
    return "\n".join(lines)


@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Output image (.png, or .jpg / .jpeg).")
@click.option("--json", "as_json", is_flag=True, help="Print the latent and metadata as one JSON object.")
@click.option("--save-fingerprint", default=None,
              help="Also write the publishable FP.json (and FP.private.safetensors, the private opening "
                   "of its commitment: keep it, never publish it).")
@click.option("--name", default=None, help="The model's name in FP.json (default: the GGUF general.name, the "
                                            "directory's name or the hub id; never a local path).")
@generator_options
@settings_options
def fingerprint(model, output, as_json, save_fingerprint, name, generator, truncation, settings):
    """Draw MODEL's fingerprint: invariant terms -> encoder -> generator -> a dog image."""
    from huref.fingerprint import build_fingerprint, fingerprint_bytes, latent, opening_chunks, opening_path
    from huref.inputs import check_outputs
    from huref.render import latent_code, render, truncation_setting

    run = Run("fingerprint", settings.quiet)
    image_format(output)
    subjects, settings = open_all([model], settings)
    subject = subjects[0]
    if subject.kind != "model":
        raise HurefError(f"{model}: not a model (fingerprint takes a model; `huref show` draws an FP.json)")
    if settings.layers:
        raise HurefError("--layers: a fingerprint reads every layer (docs/ENCODER.md); --layers is for compare, "
                         "invariants and lineage")
    outputs = [output] + ([save_fingerprint, opening_path(save_fingerprint)] if save_fingerprint else [])
    check_outputs(outputs, subjects)
    dog_generator, generator_info = load_dog_generator(generator, run)
    run.start(subject.latent_steps(settings) + 2)
    terms = subject.latent_terms(settings, progress=run.step)
    run.step("encoding")
    fp, salt = build_fingerprint(terms, generator_info, name=name or subject.label)
    run.step("drawing")
    picture = render(latent(fp), dog_generator, truncation)
    psi, code = truncation_setting(dog_generator, truncation)[0], latent_code(latent(fp))
    files = [(output, image_bytes(picture, output))]
    if save_fingerprint:
        files += [(save_fingerprint, fingerprint_bytes(fp)), (opening_path(save_fingerprint), opening_chunks(terms, salt))]
    write_all(files)
    run.finish()
    if save_fingerprint and not settings.quiet:
        click.echo(f"wrote {save_fingerprint} (publishable) and {opening_path(save_fingerprint)} "
                   f"(private: opens the commitment, keep it)", err=True)
    if as_json:
        click.echo(finite_json(dict(fp, image=output, truncation=psi, code=code)))
    else:
        click.echo(f"wrote {output}: fingerprint of {fp['model']} ({fp['model_type']}, layers {fp['layers']}, "
                   f"{fp['n_tokens']} tokens, generator {generator_info['name']}); code {code}")


@cli.command()
@click.argument("fingerprint_file", metavar="FP.json")
@click.option("-o", "--output", required=True, help="Output image (.png, or .jpg / .jpeg).")
@generator_options
@quiet_option
def show(fingerprint_file, output, generator, truncation, quiet):
    """Render a published fingerprint FP.json as its dog."""
    from huref.fingerprint import latent
    from huref.inputs import Settings, check_outputs
    from huref.render import render

    run = Run("show", quiet)
    image_format(output)
    subjects, _ = open_all([fingerprint_file], Settings(quiet=quiet))
    fp = subjects[0].fingerprint
    if fp is None:
        raise HurefError(f"{fingerprint_file}: not a fingerprint (.json)")
    check_outputs([output], subjects)
    named = fp["generator"]["name"]
    dog_generator, info = load_dog_generator(generator or (named if named in ("bundled", "afhqdog") else None), run)
    if info["sha256"] != fp["generator"].get("sha256"):
        run.notice(f"rendering with generator {info['name']}, not the one the fingerprint names ({named}); "
                   "the dog will look different")
    write_all([(output, image_bytes(render(latent(fp), dog_generator, truncation), output))])
    run.finish()
    if not quiet:
        click.echo(f"wrote {output}")


@cli.command()
@click.argument("model")
@click.option("--base", "bases", multiple=True, help="A model, invariants file or fingerprint (repeatable).")
@click.option("--registry", type=click.Path(file_okay=False), default=None,
              help="Compare against every fingerprint (.json) and invariants (.safetensors) file in this folder.")
@click.option("--min-ics", type=float, default=None, help="ICS threshold (default: the calibrated same-base one).")
@click.option("--min-latent", type=float, default=None,
              help="Latent-cosine threshold for fingerprint bases (default: the calibrated latent verdict).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@settings_options
def verify(model, bases, registry, min_ics, min_latent, as_json, settings):
    """Exit 0 when MODEL derives from a base (--base / --registry), 1 when not, 2 on bad input."""
    from huref.comparison import check_thresholds, judgement, verify as run_verify, verify_plans
    from huref.inputs import open_subject

    check_thresholds(min_ics, min_latent)
    candidates = list(bases) + (registry_files(registry) if registry else [])
    if not candidates:
        raise HurefError("give --base BASE or --registry DIR")
    run = Run("verify", settings.quiet)
    subject = open_subject(model, settings)
    opened = [open_subject(spec, settings) for spec in candidates]
    model_bases = [base for base in opened if base.kind == "model"]
    lineage_tokens = lineage_token_count([subject] + model_bases, settings, "lineage") if min_ics is None else None
    run.start(sum(subject.steps(plan) for plan in set(verify_plans(subject, opened, settings)))
              + (lineage_steps([subject] + model_bases, settings, lineage_tokens) if model_bases else 0))
    result = run_verify(subject, opened, settings, min_ics, min_latent, progress=run.step,
                        lineage_tokens=lineage_tokens if model_bases else None)
    text = finite_json(result)
    run.finish()
    if as_json:
        click.echo(text)
    else:
        best = result["best"]
        says = "derives from" if result["derives"] else "does not derive from"
        found = judgement(best)
        if best["decided_by"] == "lineage":
            why = f"lineage z {found['z']:+.1f}, p {found['p_value']:.2g}; {best['kind']} {best['score']:+.4f}"
        elif found:
            why = f"{best['kind']} {best['score']:+.4f}, z {found['z']:+.1f}, p {found['p_value']:.2g}: {found['verdict']}"
        else:
            relation = ">=" if best["derives"] else "<"
            why = f"{best['kind']} {best['score']:+.4f} {relation} {best['threshold']:.2f}"
        click.echo(f"{model} {says} {best['base']} ({why})")
        for match in result["matches"][1:]:
            click.echo(f"  also: {match['base']}  {match['kind']} {match['score']:+.4f}")
    return 0 if result["derives"] else 1


def registry_files(directory) -> list[str]:
    """Fingerprint (.json) and invariants (.safetensors) files of a registry folder, sorted."""
    from pathlib import Path

    from huref.inputs import is_fingerprint_file, is_invariants_file

    folder = Path(directory)
    if not folder.is_dir():
        raise HurefError(f"--registry {directory}: not a folder")
    files = sorted(str(p) for p in folder.iterdir() if is_fingerprint_file(p) or is_invariants_file(str(p)))
    if not files:
        raise HurefError(f"--registry {directory}: no fingerprint (.json) or invariants (.safetensors) files")
    return files


@cli.command()
@click.argument("specs", nargs=-1, required=True, metavar="A B [C ...]")
@click.option("-o", "--output", required=True, help="Output HTML file.")
@click.option("--verdict", "verdict_from", type=click.Choice(["lineage", "ics"]), default="lineage", show_default=True,
              help="For pairs of models: lineage = the calibrated whole-depth statistic, with its layer map; "
                   "ics = the two-layer ICS thresholds (faster). Files keep their thresholds.")
@generator_options
@settings_options
def report(specs, output, verdict_from, generator, truncation, settings):
    """HTML report of models, invariants files and fingerprints: dogs, score heatmap, per-term detail,
    lineage maps of model pairs."""
    from huref.inputs import check_outputs
    from huref.report import make_report

    if len(specs) < 2:
        raise HurefError("report needs at least two models, invariants files or fingerprints")
    run = Run("report", settings.quiet)
    subjects, settings = open_all(list(specs), settings)
    check_outputs([output], subjects)
    dog_generator = load_dog_generator(generator, run)[0]
    models = [s for s in subjects if s.kind == "model"]
    lineage_tokens = lineage_token_count(models, settings, verdict_from) if len(models) >= 2 else None
    run.start(sum(s.steps(settings) for s in subjects) + lineage_steps(models, settings, lineage_tokens) + 1)
    page = make_report(subjects, dog_generator, settings, truncation, run.step, lineage_tokens)
    write_all([(output, page.encode())])
    run.finish()
    if not settings.quiet:
        click.echo(f"wrote {output}")


@cli.group("generator")
def generator_group() -> None:
    """Get or convert StyleGAN2 generators (NVIDIA's AFHQ-dog, or any stylegan2-ada-pytorch pickle)."""


@generator_group.command("download")
@click.argument("name", type=click.Choice(["afhqdog"]))
@click.option("--url", default=None, help="Fetch from this URL instead of NVIDIA's CDN.")
@quiet_option
def generator_download(name, url, quiet):
    """Download NVIDIA's AFHQ-dog generator into huref's cache (resumable; NVIDIA licence, non-commercial)."""
    from huref.generators import AFHQDOG_URL, LICENSE_NOTICE, download_afhqdog
    from huref.progress import ByteProgress

    if not quiet:
        click.echo(LICENSE_NOTICE, err=True)
    progress = ByteProgress(enabled=not quiet)
    path, record = download_afhqdog(url or AFHQDOG_URL, progress=progress)
    progress.close()
    if not quiet:
        click.echo(f"{path}: sha256 {record['sha256']}", err=True)
    click.echo(str(path))


@generator_group.command("convert")
@click.argument("in_pkl", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
def generator_convert(in_pkl, out):
    """Convert an NVIDIA network pickle's G_ema to OUT.safetensors + OUT.json, running nothing from the pickle."""
    from huref.generators import convert_generator

    path = convert_generator(in_pkl, out)
    click.echo(f"wrote {path} and {path.with_suffix('.json')}")


from huref.registry.commands import register as register_registry_commands  # noqa: E402 (after `cli` exists)

register_registry_commands(cli)


def keep_freed_memory() -> None:
    """Ask glibc's malloc to serve every block from its heap and keep freed ones (no mmap per block,
    no trimming): the readers allocate and free the same 64 MB weight blocks layer after layer, and
    a fresh mapping costs a page fault per 4 KiB touched, about 1.5 s per 7B layer on this project's
    2-core machine (docs/PERFORMANCE.md). A no-op where the C library has no mallopt."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    mallopt(m_mmap_max, 0)
    mallopt(m_trim_threshold, 1 << 30)


def main() -> None:
    """Entry point: run the CLI, turning errors into one line on stderr and an exit code."""
    keep_freed_memory()
    try:
        code = cli.main(standalone_mode=False)
    except HurefError as e:
        click.echo(f"huref: error: {one_line(str(e))}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except InstallationError as e:
        click.echo(f"huref: installation fault: {one_line(str(e))} (reinstall huref)", err=True)
        sys.exit(EXIT_INTERNAL)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("huref: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:  # a usage error: one line too (`huref COMMAND --help` shows the usage)
        click.echo(f"huref: error: {one_line(e.format_message())}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except Exception as e:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("HUREF_DEBUG"):
            raise
        click.echo(f"huref: internal error: {type(e).__name__}: {one_line(str(e))} "
                   "(HUREF_DEBUG=1 shows the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


def one_line(text: str, limit: int = 400) -> str:
    """text on one line, at most `limit` characters (a file's contents can reach a message)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


if __name__ == "__main__":
    main()
