"""The `huref` command line: click commands that parse, call the library, and print.

Exit codes: 0 success; 1 a check that ran and said no (`verify`); 2 bad input or usage (one line on
stderr, no traceback, no output file left behind); 3 an internal error (a bug: please report it;
HUREF_DEBUG=1 shows the traceback) or an installation fault (packaged weights missing).
"""

from __future__ import annotations

import json
import os
import sys

import click
import torch

import huref
from huref.errors import HurefError, InstallationError
from huref.progress import Progress

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3


def parse_layers(text: str | None) -> list[int] | None:
    """'-2,-1' or '30,31' -> [ints]; None when not given."""
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise HurefError(f"--layers takes comma-separated integers, not '{text}'") from None


def _dtype(precision: str) -> torch.dtype:
    return torch.float64 if precision == "float64" else torch.float32


def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise HurefError("--device cuda: no CUDA device is available")
    return name


def common_options(f):
    """Options shared by commands that compute invariant terms."""
    f = click.option("--tokens", "n_tokens", type=click.IntRange(min=2), default=4096, show_default=True,
                     help="Number of probe tokens (capped by the vocabulary).")(f)
    f = click.option("--layers", default=None, help="Comma-separated layer indices; negative count from the end. Default: the last two.")(f)
    f = click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for hub models.")(f)
    f = click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)(f)
    f = click.option("--precision", type=click.Choice(["float32", "float64"]), default="float32", show_default=True,
                     help="Arithmetic of the terms; float64 is a slower check mode.")(f)
    f = click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")(f)
    return f


def _progress(title: str, total: int, quiet: bool) -> Progress:
    return Progress(title, total, enabled=not quiet)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(huref.__version__, prog_name="huref")
def cli() -> None:
    """Human-readable fingerprints of large language models, from their weights alone (HuRef)."""


@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .safetensors file.")
@common_options
def invariants(model, output, n_tokens, layers, revision, device, precision, quiet):
    """Compute MODEL's private invariant terms and write them to OUTPUT (do not publish them)."""
    from huref.invariants import invariant_terms, save_terms
    from huref.sources import load_model

    opened = load_model(model, revision)
    chosen = parse_layers(layers)
    progress = _progress("invariants", 1 + len(chosen or [0, 0]), quiet)
    terms = invariant_terms(opened, chosen, n_tokens, device=_device(device), dtype=_dtype(precision),
                            progress=progress.step)
    progress.close()
    save_terms(terms, output)
    click.echo(f"wrote {output}: {len(terms.layers)} layers x 3 terms over {len(terms.tokens)} tokens", err=True)


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Also write the two dogs side by side with the score to this PNG.")
@common_options
def compare(a, b, as_json, image, n_tokens, layers, revision, device, precision, quiet):
    """Compare A and B (each a model, an invariants file or a fingerprint FP.json): ICS, per term and
    layer, PCS, verdict; with a fingerprint, the latent cosine."""
    from huref.comparison import check_same_settings, compare as compare_sides, is_invariants_file, open_side
    from huref.fingerprint import is_fingerprint_file

    chosen = parse_layers(layers)
    progress = _progress("compare", 2 * (1 + len(chosen or [0, 0])), quiet)
    kwargs = dict(layers=chosen, n_tokens=n_tokens, revision=revision, device=_device(device),
                  dtype=_dtype(precision), progress=progress.step)
    if is_fingerprint_file(a) or is_fingerprint_file(b):
        return compare_latents(a, b, as_json, image, progress, kwargs)
    swap = is_invariants_file(b) and not is_invariants_file(a)  # open the file side first
    first = open_side(b if swap else a, **kwargs)
    second = open_side(a if swap else b, like=first.terms if first.model is None else None, **kwargs)
    side_a, side_b = (second, first) if swap else (first, second)
    check_same_settings(side_a, side_b)
    progress.close()
    report = compare_sides(side_a, side_b)
    if image:
        from huref.report import comparison_image
        from huref.verify import Subject

        comparison_image(Subject(a, side_a.terms, side=side_a), Subject(b, side_b.terms, side=side_b),
                         f"ICS {report['ics']:+.4f}  ({report['verdict']})", image)
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(format_report(report))


@cli.command()
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def demo(quiet):
    """Build three tiny models on the spot (a base, a disguised fine-tune of it, an unrelated one)
    and compare them: the main job, end to end, with no download."""
    from huref.comparison import compare as compare_sides, open_side

    progress = _progress("demo", 9, quiet)
    sides = {name: open_side(f"demo:{name}", progress=progress.step) for name in ("base", "offspring", "independent")}
    progress.close()
    for other in ("offspring", "independent"):
        report = compare_sides(sides["base"], sides[other])
        click.echo(f"demo:base vs demo:{other:<12} ICS {report['ics']:+.4f}  "
                   f"(qk {report['terms']['qk']:+.3f}, vo {report['terms']['vo']:+.3f}, "
                   f"ffn {report['terms']['ffn']:+.3f})  PCS {report['pcs']:+.4f}  -> {report['verdict']}")


def format_report(report: dict) -> str:
    """A readable table of a comparison report."""
    lines = []
    for tag in ("a", "b"):
        side = report[tag]
        lines.append(f"{tag.upper()}: {side['source']}  ({side['kind']}, {side['model_type']}, "
                     f"layers {side['layers']}, {side['n_tokens']} tokens)")
    lines.append(f"common probe tokens: {report['n_common_tokens']}")
    lines.append("")
    lines.append("term     ICS")
    for name, value in report["terms"].items():
        lines.append(f"{name:<8} {value:+.4f}")
    for i, value in enumerate(report["layers"]):
        lines.append(f"layer {report['a']['layers'][i]:<3}{value:+.4f}")
    lines.append("")
    pcs = "n/a" if report["pcs"] is None else f"{report['pcs']:+.4f}"
    lines.append(f"ICS {report['ics']:+.4f}   PCS {pcs}   verdict: {report['verdict']}")
    return "\n".join(lines)


# ---- fingerprints: huref fingerprint / show / verify / report, and compare's fingerprint case ----

def generator_option(f):
    return click.option("--generator", default=None,
                        help="bundled, afhqdog (once downloaded) or a generator file. "
                             "Default: afhqdog when downloaded, else bundled.")(f)


def truncation_option(f):
    return click.option("--truncation", type=click.FloatRange(0, 1), default=0.5, show_default=True,
                        help="Truncation psi on the first 8 style inputs (the HuRef pipeline's setting); "
                             "lower gives cleaner, more alike dogs.")(f)


def compare_latents(a, b, as_json, image, progress, kwargs):
    """compare when A or B is a fingerprint: latent cosine, said so."""
    from huref.verify import compare_with_fingerprints

    subject_a, subject_b, report = compare_with_fingerprints(a, b, **kwargs)
    progress.close()
    if image:
        from huref.report import comparison_image

        comparison_image(subject_a, subject_b, f"latent cosine {report['latent_cosine']:+.4f}  ({report['verdict']})",
                         image)
    if as_json:
        click.echo(json.dumps(report))
        return
    for tag in ("a", "b"):
        side = report[tag]
        click.echo(f"{tag.upper()}: {side['source']}  ({side['kind']}, {side['model_type']}, "
                   f"layers {side['layers']}, {side['n_tokens']} tokens)")
    click.echo(f"note: {report['note']}")
    click.echo(f"latent cosine {report['latent_cosine']:+.4f}   threshold {report['threshold']:.2f}   "
               f"verdict: {report['verdict']}")


@cli.command()
@click.argument("model")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the latent and metadata as one JSON object.")
@click.option("--save-fingerprint", type=click.Path(dir_okay=False), default=None,
              help="Also write the publishable FP.json (and FP.private.safetensors, the private opening "
                   "of its commitment: keep it, never publish it).")
@generator_option
@truncation_option
@common_options
def fingerprint(model, output, as_json, save_fingerprint, generator, truncation, n_tokens, layers, revision,
                device, precision, quiet):
    """Draw MODEL's fingerprint: invariant terms -> encoder -> generator -> a dog PNG."""
    from huref.fingerprint import build_fingerprint, latent, opening_path, save_fingerprint as write_fp, save_opening
    from huref.generators import load_generator
    from huref.invariants import invariant_terms
    from huref.render import render, save_png
    from huref.sources import load_model

    G, generator_info, notice = load_generator(generator)
    chosen = parse_layers(layers)
    progress = _progress("fingerprint", 3 + len(chosen or [0, 0]), quiet)
    progress.step("reading tensors")
    opened = load_model(model, revision)
    terms = invariant_terms(opened, chosen, n_tokens, device=_device(device), dtype=_dtype(precision),
                            progress=progress.step)
    progress.step("encoding")
    fp, salt = build_fingerprint(terms, generator_info)
    progress.step("rendering")
    picture = render(latent(fp), G, truncation)
    progress.close()
    save_png(picture, output)
    if save_fingerprint:
        write_fp(fp, save_fingerprint)
        save_opening(terms, salt, opening_path(save_fingerprint))
        click.echo(f"wrote {save_fingerprint} (publishable) and {opening_path(save_fingerprint)} "
                   f"(private: opens the commitment, keep it)", err=True)
    if as_json:
        click.echo(json.dumps(dict(fp, image=output, truncation=truncation)))
    else:
        click.echo(f"wrote {output}: fingerprint of {model} ({fp['model_type']}, layers {fp['layers']}, "
                   f"{fp['n_tokens']} tokens, generator {generator_info['name']})")
    if notice and not quiet:
        click.echo(notice, err=True)


@cli.command()
@click.argument("fingerprint_file", metavar="FP.json")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
@generator_option
@truncation_option
def show(fingerprint_file, output, generator, truncation):
    """Render a published fingerprint FP.json as its dog PNG."""
    from huref.fingerprint import latent, load_fingerprint
    from huref.generators import load_generator
    from huref.render import render, save_png

    fp = load_fingerprint(fingerprint_file)
    named = fp["generator"]["name"]
    G, info, notice = load_generator(generator or (named if named in ("bundled", "afhqdog") else None))
    if info["sha256"] != fp["generator"].get("sha256"):
        click.echo(f"huref: note: rendering with generator {info['name']}, not the one the fingerprint names "
                   f"({named}); the dog will look different", err=True)
    save_png(render(latent(fp), G, truncation), output)
    click.echo(f"wrote {output}")
    if notice:
        click.echo(notice, err=True)


@cli.command()
@click.argument("model")
@click.option("--base", "bases", multiple=True, help="A model, invariants file or fingerprint (repeatable).")
@click.option("--registry", type=click.Path(file_okay=False), default=None,
              help="Compare against every fingerprint (.json) and invariants (.safetensors) file in this folder.")
@click.option("--min-ics", type=float, default=None, help="ICS threshold (default: the calibrated same-base one).")
@click.option("--min-latent", type=float, default=None, help="Latent-cosine threshold for fingerprint bases.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")
@common_options
def verify(model, bases, registry, min_ics, min_latent, as_json, n_tokens, layers, revision, device, precision,
           quiet):
    """Exit 0 when MODEL derives from a base (--base / --registry), 1 when not, 2 on bad input."""
    from huref.verify import registry_files, verify as run_verify

    candidates = list(bases) + (registry_files(registry) if registry else [])
    if not candidates:
        raise HurefError("give --base BASE or --registry DIR")
    progress = _progress("verify", 2 + 2 * len(candidates), quiet)
    result = run_verify(model, candidates, min_ics, min_latent, layers=parse_layers(layers), n_tokens=n_tokens,
                        revision=revision, device=_device(device), dtype=_dtype(precision), progress=progress.step)
    progress.close()
    if as_json:
        click.echo(json.dumps(result))
    else:
        best = result["best"]
        says = "derives from" if result["derives"] else "does not derive from"
        relation = ">=" if best["derives"] else "<"
        click.echo(f"{model} {says} {best['base']} ({best['kind']} {best['score']:+.4f} {relation} {best['threshold']:.2f})")
        for match in result["matches"][1:]:
            click.echo(f"  also: {match['base']}  {match['kind']} {match['score']:+.4f}")
    return 0 if result["derives"] else 1


@cli.command()
@click.argument("specs", nargs=-1, required=True, metavar="A B [C ...]")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output HTML file.")
@generator_option
@truncation_option
@common_options
def report(specs, output, generator, truncation, n_tokens, layers, revision, device, precision, quiet):
    """HTML report of models, invariants files and fingerprints: dogs, score heatmap, per-term detail."""
    from huref.files import write_atomically
    from huref.report import make_report

    if len(specs) < 2:
        raise HurefError("report needs at least two models, invariants files or fingerprints")
    progress = _progress("report", 2 + 4 * len(specs), quiet)
    page = make_report(list(specs), generator, truncation, progress=progress.step, layers=parse_layers(layers),
                       n_tokens=n_tokens, revision=revision, device=_device(device), dtype=_dtype(precision))
    progress.close()
    write_atomically(output, page.encode())
    click.echo(f"wrote {output}")



@cli.group("generator")
def generator_group() -> None:
    """Get or convert StyleGAN2 generators (NVIDIA's AFHQ-dog, or any stylegan2-ada-pytorch pickle)."""


@generator_group.command("download")
@click.argument("name", type=click.Choice(["afhqdog"]))
@click.option("--url", default=None, help="Fetch from this URL instead of NVIDIA's CDN.")
def generator_download(name, url):
    """Download NVIDIA's AFHQ-dog generator into huref's cache (resumable; NVIDIA licence, non-commercial)."""
    from huref.generators import AFHQDOG_URL, LICENSE_NOTICE, download_afhqdog
    from huref.progress import ByteProgress

    click.echo(LICENSE_NOTICE, err=True)
    progress = ByteProgress()
    path, record = download_afhqdog(url or AFHQDOG_URL, progress=progress)
    progress.close()
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


def main() -> None:
    """Entry point: run the CLI, turning errors into one line on stderr and an exit code."""
    try:
        code = cli.main(standalone_mode=False)
    except HurefError as e:
        click.echo(f"huref: error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except InstallationError as e:
        click.echo(f"huref: installation fault: {e} (reinstall huref)", err=True)
        sys.exit(EXIT_INTERNAL)
    except click.exceptions.Abort:
        click.echo("huref: aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("huref: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless debugging
        if os.environ.get("HUREF_DEBUG"):
            raise
        click.echo(f"huref: internal error: {type(e).__name__}: {e} (HUREF_DEBUG=1 shows the traceback)", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
