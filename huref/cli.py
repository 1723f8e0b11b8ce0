"""The `huref` command line: each command opens its arguments, plans, scores, and prints.

Exit codes: 0 success; 1 a check that ran and said no (`verify`, `open`); 2 bad input or usage (one
line on stderr, no traceback, no output file left behind); 3 an internal error (a bug: please report
it; HUREF_DEBUG=1 shows the traceback) or an installation fault; 130 interrupted (Ctrl-C).

Adding a command (e.g. from another module, registered here with `cli.add_command`): take the shared
options with `@settings_options` (it hands the command one frozen `huref.inputs.Settings`, verdict
policy included), `@quiet_option`, `@json_option` (huref.options), `@output_option(kind)` (one -o/--output for every
command) and `@generator_options`; then
    run = Run("name", settings.quiet)
    subjects, settings = open_all(specs, settings)        # every argument opened, settings matched
    check_outputs([(output, "image")], subjects)          # suffix, folder, no input overwritten
    run.start(plan.steps)                                 # a huref.comparison.Plan, or a step count
    ... work, calling run.step(name) ...
    run.write([(output, data, "what it is")])             # all outputs or none; "wrote ..." lines
    run.finish(); echo(result.to_json() or result.to_text())
and raise huref.errors.HurefError for bad input: `main` turns it into one line and exit 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

import huref
from huref.errors import HurefError, InstallationError
from huref.options import json_option, quiet_option
from huref.outputs import check_outputs
from huref.progress import Progress

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
# Hints for usage errors any command can hit; a command adds its own with `hints=`.
COMMON_HINTS = {
    "--image": "every command writes its picture with -o/--output",
    "--out": "every command writes with -o/--output",
}


class Command(click.Command):
    """A click command whose usage errors carry a hint: `hints` maps an unknown option name, or
    "extra argument" for one argument too many, to one line of advice."""

    def __init__(self, *args, hints: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hints = {**COMMON_HINTS, **(hints or {})}

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            if error.option_name in self.hints:  # a hint beats click's guess at a similar name
                error.message += f" ({self.hints[error.option_name]})"
                error.possibilities = None
            else:  # click's guesses, less the hidden (deprecated) options
                hidden = {name for p in self.params if getattr(p, "hidden", False) for name in p.opts}
                error.possibilities = [name for name in error.possibilities or () if name not in hidden] or None
            raise
        except click.UsageError as error:
            if "unexpected extra argument" in error.message and "extra argument" in self.hints:
                error.message += f" ({self.hints['extra argument']})"
            raise


class Group(click.Group):
    """A click group whose commands are `Command`s and whose subgroups are `Group`s (click's `type`)."""

    command_class = Command
    group_class = type


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    """'-2,-1' or '30,31' -> (ints); None when not given."""
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip()) or None
    except ValueError:
        raise HurefError(f"--layers takes comma-separated integers, not '{text[:80]}'") from None


def output_option(kind: str, required: bool = False, help: str = ""):
    """-o/--output: where the command writes its picture, page or file, of `kind`
    (`huref.outputs.SUFFIXES`: checked with `check_outputs` before any work)."""
    from huref.outputs import SUFFIXES

    suffixes = "/".join(SUFFIXES[kind])
    return click.option("-o", "--output", required=required, default=None, metavar="PATH",
                        help=f"{help.rstrip('.')} ({suffixes}).")


POLICY_OPTIONS = {
    "verdict": lambda: click.option(
        "--verdict", "source", type=click.Choice(["lineage", "ics"]), default="lineage", show_default=True,
        help="For two models: lineage = the calibrated whole-depth statistic (at most 8 evenly spaced layers of "
             "each, 256 probe tokens or --tokens if fewer); ics = the two-layer ICS verdict (faster). Files are "
             "judged by their ICS or latent verdict."),
    "min_ics": lambda: click.option("--min-ics", type=float, default=None,
                                    help="ICS threshold (default: the calibrated verdict)."),
    "min_latent": lambda: click.option("--min-latent", type=float, default=None,
                                       help="Latent-cosine threshold for fingerprint bases (default: the calibrated "
                                            "latent verdict)."),
    "stride": lambda: click.option("--stride", type=click.IntRange(min=1), default=None,
                                   help="Read every STRIDE-th layer (faster; the null panel was calibrated on every "
                                        "layer). Default: every layer."),
}


def settings_options(f=None, *, whole_depth: bool = False, latent: bool = False, policy: tuple[str, ...] = ()):
    """The options every command that computes terms shares (--tokens, --layers, --revision,
    --device, --precision, -q) and the verdict options named in `policy` (keys of POLICY_OPTIONS),
    collapsed into one `settings` argument (a frozen huref.inputs.Settings with its Policy).
    `whole_depth` (lineage): --layers and --stride choose the layers of the whole-depth terms
    (default every layer), and --tokens defaults to huref.lineage.LINEAGE_TOKENS. `latent`
    (fingerprint): the encoder's rule chooses the layers (--layers is hidden; the command refuses it)
    and defaults and caps the tokens at huref.encoder.LATENT_TOKENS."""
    if f is None:
        return functools.partial(settings_options, whole_depth=whole_depth, latent=latent, policy=policy)
    from huref.encoder import LATENT_TOKENS
    from huref.invariants import DEFAULT_TOKENS, PRECISIONS
    from huref.lineage import LINEAGE_TOKENS

    @functools.wraps(f)
    def command(n_tokens, layers, revision, device, precision, quiet, **kwargs):
        from huref.inputs import Policy, Settings

        chosen = {name: kwargs.pop(name) for name in ("source", "min_ics", "min_latent", "stride") if name in kwargs}
        if whole_depth:
            given = parse_layers(layers)
            rules = Policy(lineage_tokens=n_tokens, layers=given,
                           stride=chosen.pop("stride", None) or (None if given else 1), **chosen)
            settings = Settings(n_tokens=n_tokens, revision=revision, device=device, precision=precision,
                                quiet=quiet, policy=rules)
        else:
            settings = Settings(n_tokens=n_tokens, layers=parse_layers(layers), revision=revision, device=device,
                                precision=precision, quiet=quiet, policy=Policy(**chosen))
        return f(settings=settings, **kwargs)

    layer_help = ("Comma-separated layer indices of the whole-depth terms; negative count from the end. Default: every "
                  "layer (the null panel was calibrated on every layer)." if whole_depth else
                  "Comma-separated layer indices; negative count from the end. Default: the two middle layers that "
                  "write (attention layers in hybrids); -2,-1 is the paper's choice, the last two.")
    options = [
        click.option("--tokens", "n_tokens", type=int,
                     default=LINEAGE_TOKENS if whole_depth else LATENT_TOKENS if latent else DEFAULT_TOKENS,
                     show_default=True, help="Number of probe tokens (capped by the vocabulary" +
                     (f"; the fingerprint's encoder reads at most {LATENT_TOKENS})." if latent else ").")),
        click.option("--layers", default=None, help=layer_help, hidden=latent),
        *(POLICY_OPTIONS[name]() for name in policy),
        click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for hub models."),
        click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True),
        click.option("--precision", type=click.Choice(list(PRECISIONS)), default="float32", show_default=True,
                     help="Arithmetic of the terms; bfloat16: weight products in bfloat16 with float32 "
                          "accumulation (faster where the CPU has bfloat16 instructions); float64 is a slower "
                          "check mode."),
        quiet_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def generator_options(f):
    """--generator and --truncation, for every command that draws dogs."""
    from huref.render import DEFAULT_TRUNCATION

    f = click.option("--truncation", type=click.FloatRange(0, 1), default=DEFAULT_TRUNCATION,
                     help="Truncation psi; lower gives cleaner, more alike dogs. Default: the generator's own "
                          "(AFHQ-dog: the paper's 0.5 on the first 8 style inputs; bundled: the one stored in its "
                          ".json, chosen by how far apart relatives' and strangers' dogs look).")(f)
    return click.option("--generator", default=None,
                        help="bundled, afhqdog (once downloaded) or a generator file. "
                             "Default: afhqdog when downloaded, else bundled.")(f)


class Run:
    """What one command run shares: its progress bar, notices and "wrote" lines on stderr (all
    silenced by -q; notices are said after the work, never before an error)."""

    def __init__(self, title: str, quiet: bool) -> None:
        self.title, self.quiet, self.notices, self.written = title, quiet, [], []
        self.progress: Progress | None = None

    def start(self, steps) -> "Run":
        """Start the progress bar for `steps`: a count, or anything with a `steps` count (a Plan)."""
        self.progress = Progress(self.title, getattr(steps, "steps", steps), enabled=not self.quiet)
        return self

    def step(self, name: str) -> None:
        if self.progress is not None:
            self.progress.step(name)

    def notice(self, text: str | None) -> None:
        if text:
            self.notices.append(text)

    def write(self, files: list[tuple[object, object, str]]) -> None:
        """Write every (path, data, what) at once (`huref.files.write_all`: all or none) and note a
        "wrote PATH (what)" line for each."""
        from huref.files import write_all

        write_all([(path, data) for path, data, _ in files])
        self.written += [f"wrote {path}" + (f" ({what})" if what else "") for path, _, what in files]

    def finish(self) -> None:
        """Close the progress bar, then say the notices and the files written."""
        if self.progress is not None:
            self.progress.close()
        if not self.quiet:
            for text in self.notices:
                click.echo(f"huref: note: {text}", err=True)
            for line in self.written:
                click.echo(line, err=True)


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


def finite_json(report: dict) -> str:
    """One JSON object; a non-finite number (not JSON) is an error, never printed."""
    try:
        return json.dumps(report, allow_nan=False)
    except ValueError:
        raise HurefError("a score is not a finite number (the inputs hold values too large to compare)") from None


def result_text(result, as_json: bool) -> str:
    """A result object's JSON (one object) or its text."""
    return finite_json(result.to_json()) if as_json else result.to_text()


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(huref.__version__, prog_name="huref")
def cli() -> None:
    """Human-readable fingerprints of large language models, from their weights alone (HuRef).
    Every command writes its file with -o/--output."""


@cli.command()
@click.argument("model")
@output_option("invariants", required=True, help="The invariants file.")
@settings_options
def invariants(model, output, settings):
    """Compute MODEL's private invariant terms and write them to OUTPUT (do not publish them)."""
    from huref.inputs import require_model
    from huref.invariants import terms_chunks

    run = Run("invariants", settings.quiet)
    subjects, settings = open_all([model], settings)
    subject = require_model(subjects[0], "invariants reads a model's weights")
    check_outputs([(output, "invariants")], subjects)
    terms = subject.terms(settings, run.start(subject.steps(settings)).step)
    run.write([(output, terms_chunks(terms), f"{len(terms.layers)} layers x 3 terms over {len(terms.tokens)} tokens")])
    run.finish()


@cli.command(hints={"extra argument": "compare takes two arguments, A and B"})
@click.argument("a")
@click.argument("b")
@json_option
@output_option("image", help="Also write the two dogs side by side with the score.")
@click.option("--image", "image_alias", default=None, hidden=True, help="Deprecated: -o/--output.")
@generator_options
@settings_options(policy=("verdict",))
def compare(a, b, as_json, output, image_alias, generator, truncation, settings):
    """Compare A and B (each a model, an invariants file or a fingerprint FP.json): ICS per term and
    layer, PCS, verdict; with a fingerprint, the latent cosine."""
    from huref.comparison import Plan, compare_pair, dog_reads, pair_reads
    from huref.inputs import latent_version
    from huref.report import comparison_image

    run = Run("compare", settings.quiet)
    if image_alias:
        if output:
            raise HurefError("give -o/--output or --image (its old name), not both")
        output = image_alias
        run.notice("--image is deprecated: use -o/--output")
    subjects, settings = open_all([a, b], settings)
    check_outputs([(output, "image")] if output else [], subjects)
    dog_generator = load_dog_generator(generator, run)[0] if output else None
    dogs = dog_reads(subjects, settings, latent_version(*subjects)) if output else []
    run.start(Plan.of(pair_reads(*subjects, settings) + dogs).steps + (1 if output else 0))
    result = compare_pair(*subjects, settings, run.step)
    text = result_text(result, as_json)
    if output:
        from huref.outputs import encode_image

        for read in dogs:  # the latents the dogs are drawn from: those compared, of one encoder version
            read.compute(run.step)
        run.step("drawing")
        picture = comparison_image(*subjects, settings, result.headline(), dog_generator, truncation)
        run.write([(output, encode_image(picture, output), "the two dogs side by side")])
    run.finish()
    click.echo(text)


@cli.command()
@quiet_option
def demo(quiet):
    """Build three tiny models on the spot (a base, a disguised fine-tune of it, an unrelated one)
    and compare them: the main job, end to end, with no download."""
    from huref.comparison import compare_pair, plan_pairs
    from huref.inputs import Settings
    from huref.results import PCS_NOTE, panel_note

    run = Run("demo", quiet)
    subjects, settings = open_all([f"demo:{name}" for name in ("base", "offspring", "independent")],
                                  Settings(quiet=quiet))
    pairs = [(subjects[0], other, settings) for other in subjects[1:]]
    run.start(plan_pairs(pairs))
    results = [compare_pair(*pair, run.step) for pair in pairs]
    run.finish()
    for other, result in zip(subjects[1:], results):
        click.echo(f"demo:base vs {other.spec:<17} {result.one_line()}")
    click.echo(f"{PCS_NOTE}.\n{panel_note(*(result.judgement for result in results))}")


@cli.command(hints={"extra argument": "lineage takes two models, A and B"})
@click.argument("a")
@click.argument("b")
@json_option
@output_option("image", help="Also write the layer-by-layer map as an image.")
@settings_options(whole_depth=True, policy=("stride",))
def lineage(a, b, as_json, output, settings):
    """Which layers of model B come from which layers of model A, over the whole depth: the layer map,
    its alignment, and a calibrated verdict (statistic, z, p-value)."""
    from huref.comparison import lineage_pair, plan_lineage

    run = Run("lineage", settings.quiet)
    subjects, settings = open_all([a, b], settings)
    plan = plan_lineage(*subjects, settings)
    check_outputs([(output, "image")] if output else [], subjects)
    run.start(plan)
    found = lineage_pair(*subjects, settings, run.step)
    text = result_text(found, as_json)
    if output:
        from huref.outputs import encode_image

        run.write([(output, encode_image(found.image(), output), "the layer map")])
    run.finish()
    click.echo(text)


@cli.command()
@click.argument("model")
@output_option("image", required=True, help="The dog.")
@json_option
@click.option("--save-fingerprint", default=None, metavar="FP.json",
              help="Also write the publishable FP.json, and FP.private.safetensors beside it: the salt that opens "
                   "its commitment (under a kilobyte; keep it private).")
@click.option("--save-opening", is_flag=True,
              help="Keep the terms in FP.private.safetensors too (L x 3 x n^2 float32: 12.6 MB a layer at 1024 "
                   "tokens), so the commitment opens without the model, on any machine.")
@click.option("--name", default=None, help="The model's name in FP.json (default: the GGUF general.name, the "
                                            "directory's name or the hub id; never a local path).")
@generator_options
@settings_options(latent=True)
def fingerprint(model, output, as_json, save_fingerprint, save_opening, name, generator, truncation, settings):
    """Draw MODEL's fingerprint: invariant terms -> encoder -> generator -> a dog image."""
    from huref.fingerprint import (build_fingerprint, fingerprint_bytes, key_chunks, latent, opening_chunks,
                                   private_path)
    from huref.inputs import require_model
    from huref.outputs import encode_image
    from huref.render import latent_code, render, truncation_setting

    if save_opening and not save_fingerprint:
        raise HurefError("--save-opening keeps the terms beside FP.json: give --save-fingerprint FP.json too")
    run = Run("fingerprint", settings.quiet)
    subjects, settings = open_all([model], settings)
    subject = require_model(subjects[0], "fingerprint takes a model; `huref show` draws an FP.json")
    if settings.layers:
        raise HurefError("--layers: a fingerprint reads every layer (docs/ENCODER.md); --layers is for compare, "
                         "invariants and lineage")
    outputs = [(output, "image")]
    if save_fingerprint:
        outputs += [(save_fingerprint, "json"), (private_path(save_fingerprint), "private")]
    check_outputs(outputs, subjects)
    dog_generator, generator_info = load_dog_generator(generator, run)
    run.start(subject.latent_steps(settings) + 2)
    terms = subject.latent_terms(settings, progress=run.step)
    run.step("encoding")
    fp, salt = build_fingerprint(terms, generator_info, name=name or subject.label)
    run.step("drawing")
    psi, code = truncation_setting(dog_generator, truncation)[0], latent_code(latent(fp))
    files = [(output, encode_image(render(latent(fp), dog_generator, truncation), output), "the dog")]
    if save_fingerprint:
        private = opening_chunks(terms, salt) if save_opening else key_chunks(terms, salt, settings.device)
        files += [(save_fingerprint, fingerprint_bytes(fp), "publishable"),
                  (private_path(save_fingerprint), private,
                   "private: " + ("the terms and the salt, opens the commitment anywhere" if save_opening else
                                  "the salt, opens the commitment with the model (`huref open`)") + "; keep it")]
    run.write(files)
    run.finish()
    if as_json:
        click.echo(finite_json(dict(fp, image=output, truncation=psi, code=code)))
    else:
        click.echo(f"fingerprint of {fp['model']} ({fp['model_type']}, layers {fp['layers']}, {fp['n_tokens']} tokens, "
                   f"generator {generator_info['name']}): code {code}")


@cli.command()
@click.argument("fingerprint_file", metavar="FP.json")
@output_option("image", required=True, help="The dog.")
@generator_options
@quiet_option
def show(fingerprint_file, output, generator, truncation, quiet):
    """Render a published fingerprint FP.json as its dog."""
    from huref.fingerprint import latent
    from huref.inputs import Settings, require_fingerprint
    from huref.outputs import encode_image
    from huref.render import render

    run = Run("show", quiet)
    subjects, _ = open_all([fingerprint_file], Settings(quiet=quiet))
    fp = require_fingerprint(subjects[0]).fingerprint
    check_outputs([(output, "image")], subjects)
    named = fp["generator"]["name"]
    dog_generator, info = load_dog_generator(generator or (named if named in ("bundled", "afhqdog") else None), run)
    if info["sha256"] != fp["generator"].get("sha256"):
        run.notice(f"rendering with generator {info['name']}, not the one the fingerprint names ({named}); "
                   "the dog will look different")
    picture = render(latent(fp), dog_generator, truncation)
    run.write([(output, encode_image(picture, output), f"the dog of {fp['model']}")])
    run.finish()


@cli.command("open")
@click.argument("fingerprint_file", metavar="FP.json")
@click.argument("model", required=False)
@click.option("--private", "private_file", default=None, metavar="PATH",
              help="FP.json's private file (default: FP.private.safetensors beside FP.json).")
@output_option("invariants", help="Also write the full opening (the terms with the salt: private) to this file.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit) for a hub model.")
@json_option
@quiet_option
def open_command(fingerprint_file, model, private_file, output, revision, as_json, quiet):
    """Open FP.json's commitment: check that MODEL's terms, recomputed now with the salt from the
    private file, are the terms committed to (exit 0), or say why not (exit 1). Without MODEL, the
    private file must hold the terms (fingerprint --save-opening)."""
    import torch

    from huref.fingerprint import open_commitment, opening_chunks, private_path, read_private
    from huref.inputs import Settings, open_subject, require_fingerprint, require_model

    run = Run("open", quiet)
    subject = require_fingerprint(open_subject(fingerprint_file))
    private = private_file or str(private_path(fingerprint_file))
    if not os.path.isfile(private):
        raise HurefError(f"{private}: no such private file (fingerprint --save-fingerprint writes it beside FP.json)")
    salt, key, stored = read_private(private)
    fp = subject.fingerprint
    if model is None and stored is None:
        raise HurefError(f"{private} holds only the salt: give the model to recompute the terms")
    subjects = [subject]
    if model is not None:
        made = key or stored.meta
        device = "cuda" if made.get("device") == "cuda" and torch.cuda.is_available() else "cpu"
        settings = Settings(n_tokens=fp["n_tokens"], layers=tuple(fp["layers"]), revision=revision, device=device,
                            precision=made.get("dtype", "float32"), quiet=quiet)
        subjects.append(require_model(open_subject(model, settings), "open recomputes a model's terms"))
        subjects[1].check_settings(settings)
    check_outputs([(output, "invariants")] if output else [], subjects, inputs=[private])
    if model is not None:
        run.start(subjects[1].steps(settings))
        terms = subjects[1].terms(settings, run.step)
    else:
        terms = stored
    result = open_commitment(fingerprint_file, fp, terms, salt, key)
    if output and result.opens:
        run.write([(output, opening_chunks(terms, salt), "the full opening: private")])
    run.finish()
    click.echo(result_text(result, as_json))
    return 0 if result.opens else 1


@cli.command(hints={"extra argument": "give each base with --base BASE (repeatable), or --registry DIR"})
@click.argument("model")
@click.option("--base", "bases", multiple=True, help="A model, invariants file or fingerprint (repeatable).")
@click.option("--registry", type=click.Path(file_okay=False), default=None,
              help="Compare against every fingerprint (.json) and invariants (.safetensors) file in this folder.")
@json_option
@settings_options(policy=("min_ics", "min_latent"))
def verify(model, bases, registry, as_json, settings):
    """Exit 0 when MODEL derives from a base (--base / --registry), 1 when not, 2 on bad input."""
    from huref.comparison import plan_pairs, verify as run_verify, verify_pairs
    from huref.inputs import open_subject

    candidates = list(bases) + (registry_files(registry) if registry else [])
    if not candidates:
        raise HurefError("give --base BASE or --registry DIR")
    run = Run("verify", settings.quiet)
    subject = open_subject(model, settings)
    opened = [open_subject(spec, settings) for spec in candidates]
    run.start(plan_pairs(verify_pairs(subject, opened, settings)))
    result = run_verify(subject, opened, settings, run.step)
    text = result_text(result, as_json)
    run.finish()
    click.echo(text)
    return 0 if result.derives else 1


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
@output_option("html", required=True, help="The report.")
@generator_options
@settings_options(policy=("verdict",))
def report(specs, output, generator, truncation, settings):
    """HTML report of models, invariants files and fingerprints: dogs with their codes, score
    heatmap, per-term detail, lineage maps of model pairs."""
    from huref.report import make_report, plan_report

    if len(specs) < 2:
        raise HurefError("report needs at least two models, invariants files or fingerprints")
    run = Run("report", settings.quiet)
    subjects, settings = open_all(list(specs), settings)
    check_outputs([(output, "html")], subjects)
    dog_generator = load_dog_generator(generator, run)[0]
    run.start(plan_report(subjects, settings).steps + 1)
    page = make_report(subjects, dog_generator, settings, truncation, run.step)
    run.write([(output, page.encode(), f"{len(subjects)} subjects, {len(subjects) * (len(subjects) - 1) // 2} pairs")])
    run.finish()


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


@generator_group.command("convert", hints={"extra argument": "give the output with -o/--output OUT.safetensors"})
@click.argument("in_pkl", type=click.Path(exists=True, dir_okay=False))
@output_option("generator", required=True, help="The generator's weights; its .json is written beside them")
@quiet_option
def generator_convert(in_pkl, output, quiet):
    """Convert an NVIDIA network pickle's G_ema to OUT.safetensors + OUT.json, running nothing from the pickle."""
    from huref.generators import config_path, convert_generator

    check_outputs([(output, "generator"), (config_path(output), "json")], inputs=[in_pkl])
    path = convert_generator(in_pkl, output)
    if not quiet:
        click.echo(f"wrote {path} and {config_path(path)} (the generator)", err=True)


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


def usage_message(error: click.ClickException) -> str:
    """A usage error's message, pointing to the command's --help when it carries no hint of its own."""
    message = error.format_message()
    ctx = getattr(error, "ctx", None)
    if isinstance(error, click.UsageError) and ctx is not None and "(" not in message and "Did you mean" not in message:
        message += f" (see `{ctx.command_path} --help`)"
    return message


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
    except click.ClickException as e:  # a usage error: one line too, with a hint
        click.echo(f"huref: error: {one_line(usage_message(e))}", err=True)
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
