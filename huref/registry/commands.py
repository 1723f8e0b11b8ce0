"""The registry's commands: `huref registry add|list|remove|push|pull|calibrate`, `huref identify`,
`huref audit` (registered on the main group by huref.cli).

Exit codes: 0 success (identify: a registered base found; audit: every claim confirmed and no
undisclosed base); 1 identify found no registered base, audit found a contradicted claim or an
undisclosed base (with --strict also an unverifiable claim); 2 bad input (one line on stderr; in a
batch `registry add`, after the other models were added).
"""

from __future__ import annotations

import click

from huref.errors import HurefError
from huref.options import json_option, quiet_option

REGISTRY_HELP = "The registry: a folder, or hf://datasets/ORG/NAME (pulled through huggingface_hub)."


def panel_option(f):
    return click.option("--panel", "panel_path", default=None,
                        help="A null panel JSON (e.g. from `huref registry calibrate -o`); default: the shipped "
                             "tiny-scale panel.")(f)


def load_panel(path):
    from huref.statistics import null_panel

    return null_panel(path) if path else None


@click.group("registry")
def registry_group() -> None:
    """A registry of models (Parquet parts): add, list, remove, push to / pull from the Hub, calibrate."""


@registry_group.command("add")
@click.argument("models", nargs=-1)
@click.option("-r", "--registry", "registry_spec", required=True, help="The registry folder (created if missing).")
@click.option("--from", "model_list", default=None,
              help="A file listing models, one a line: ORG/NAME, ORG/NAME@REVISION, ORG/NAME:FILE (one GGUF model "
                   "of a repo) or a local path; '#' starts a comment.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine (--jobs worker processes); ray: Ray tasks on an existing cluster.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="local engine: worker processes [default: 1, in this process].")
@click.option("--address", default=None,
              help="ray engine: the cluster (HOST:PORT; default: RAY_ADDRESS, or the one `ray start --head` "
                   "started on this machine; 'local': a private Ray instance for this job).")
@click.option("--name", default=None, help="Display name (one model only; default: its folder, GGUF name or Hub id).")
@click.option("--base-model", "bases", multiple=True,
              help="A base the registrar declares for the model (repeatable), beside what its card declares.")
@click.option("--revision", default=None, help="Hub revision for the MODEL arguments.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout: every model's outcome.")
@quiet_option
def registry_add(models, registry_spec, model_list, engine, jobs, address, name, bases, revision, as_json, quiet):
    """Register each MODEL (and each model of --from LIST): identity, declared bases, fingerprint and
    lineage sketch, one part each. A model already registered (same weights, or Hub id and commit) is
    skipped; a model that fails is recorded in the registry with its reason (`registry list` shows it),
    transient Hub failures after retries; the others are still added (exit 2 at the end)."""
    from pathlib import Path

    from huref.cli import finite_json, one_line
    from huref.readers.jsonfile import MAX_JSON_BYTES
    from huref.registry.format import Registry
    from huref.registry.jobs import parse_list, run, said_of

    items = [(spec, revision) for spec in models]
    if model_list:
        path = Path(model_list)
        try:
            if not path.is_file() or path.stat().st_size > 64 * MAX_JSON_BYTES:
                raise HurefError(f"{model_list}: not a regular file of a plausible size for a model list")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise HurefError(f"{model_list}: cannot read ({getattr(error, 'strerror', None) or error})") from None
        items += parse_list(text, model_list)
    if not items:
        raise HurefError("give MODEL arguments or --from LIST")
    if name and len(items) > 1:
        raise HurefError("--name names one model; give one MODEL with it")
    if engine == "ray" and jobs is not None:
        raise HurefError("--jobs is for --engine local (a Ray cluster's size is its CPUs)")
    if engine == "local" and address is not None:
        raise HurefError("--address is for --engine ray")
    if registry_spec.startswith("hf://"):
        raise HurefError("registry add writes a local folder; `huref registry push` publishes it")
    registry = Registry(registry_spec, create=True)

    def report(outcome) -> None:
        if as_json or outcome.status == "failed":
            return
        if outcome.status == "skipped":
            click.echo(f"{outcome.spec}: already registered ({outcome.entry_id})")
        else:
            click.echo(f"{outcome.spec}: registered as {outcome.name} ({outcome.entry_id}, {outcome.part})")

    outcomes = run(registry, items, engine, jobs or 1, address, name, bases, report, quiet)
    failed = [o for o in outcomes if o.status == "failed"]
    totals = {status: sum(o.status == status for o in outcomes) for status in ("added", "skipped", "failed")}
    totals.update(fetched_bytes=sum(o.fetched_bytes for o in outcomes), cpu_seconds=sum(o.cpu_seconds for o in outcomes))
    if as_json:
        click.echo(finite_json({"registry": registry_spec, "engine": engine, "totals": totals,
                                "outcomes": [o.to_json() for o in outcomes]}))
    elif not quiet and len(outcomes) > 1:
        click.echo(f"added {totals['added']}, already registered {totals['skipped']}, failed {totals['failed']} "
                   f"of {len(outcomes)}; {totals['fetched_bytes'] / 1e6:,.1f} MB fetched from the Hub; "
                   f"{totals['cpu_seconds']:,.1f} CPU s in tasks")
    for outcome in failed:
        click.echo(f"huref: error: {one_line(said_of(outcome.spec, outcome.reason))}", err=True)
    return 2 if failed else 0


@registry_group.command("compact")
@click.argument("registry_spec", metavar="R")
@quiet_option
def registry_compact(registry_spec, quiet):
    """Rewrite registry R's index (the small columns every command reads) as one file."""
    from huref.registry.format import Registry

    click.echo(f"indexed {Registry(registry_spec).compact()} entries in one file")


@registry_group.command("list")
@click.argument("registry_spec", metavar="R")
@json_option
@quiet_option
def registry_list(registry_spec, as_json, quiet):
    """List the live entries of registry R."""
    from huref.cli import finite_json
    from huref.registry.hub import open_registry
    from huref.registry.jobs import said_of

    registry = open_registry(registry_spec)
    columns = ["name", "hub_id", "hub_commit", "weights_sha256", "model_type", "n_parameters", "n_layers",
               "hidden_size", "declared_bases", "name_or_path", "latent_code", "huref_version"]
    entries = [dict(row, part=part.path.name) for part, row in registry.rows(columns)]
    failures = registry.failures()
    if as_json:
        click.echo(finite_json({"registry": registry_spec, "entries": entries,
                                "failures": [f.to_json() for f in failures]}))
        return
    for e in entries:
        declared = ", ".join(d["name"] for d in e["declared_bases"]) or "-"
        click.echo(f"{e['name']:<32} {e['model_type'] or '?':<12} {e['n_layers']:>3} layers "
                   f"{e['n_parameters'] / 1e6:>9.2f}M  code {e['latent_code']}  declares: {declared}")
    click.echo(f"{len(entries)} entries")
    if failures:
        click.echo(f"{len(failures)} model(s) could not be added:")
        for f in failures:
            model = f.spec + (f"@{f.revision}" if f.revision else "")
            click.echo(f"  {said_of(model, f.reason)}" + ("  (transient: a rerun retries it)" if f.transient else ""))


@registry_group.command("remove")
@click.argument("registry_spec", metavar="R")
@click.argument("names", nargs=-1, required=True)
@quiet_option
def registry_remove(registry_spec, names, quiet):
    """Remove entries from registry R by display name, entry id or part file name (a tombstone each)."""
    from huref.registry.format import Registry

    registry = Registry(registry_spec)
    live = list(registry.rows(["name"]))
    hits = {wanted: [part for part, row in live if wanted in (row["name"], part.entry_id, part.path.name)]
            for wanted in names}
    missing = [wanted for wanted, parts in hits.items() if not parts]
    if missing:  # checked before any tombstone is written
        raise HurefError(f"{registry_spec}: no entry named {missing[0]!r}")
    for wanted, parts in hits.items():
        for part in parts:
            registry.remove(part)
            click.echo(f"removed {wanted} ({part.path.name})")


@registry_group.command("push")
@click.argument("registry_spec", metavar="R")
@click.argument("repo", metavar="ORG/NAME")
@quiet_option
def registry_push(registry_spec, repo, quiet):
    """Publish registry R as the Hub dataset ORG/NAME (adds the parts it lacks, in one commit)."""
    from huref.registry.format import Registry
    from huref.registry.hub import push, repo_id_of

    count = push(Registry(registry_spec), repo_id_of(repo))
    click.echo(f"pushed {count} new file(s) to hf://datasets/{repo_id_of(repo)}")


@registry_group.command("pull")
@click.argument("repo", metavar="ORG/NAME")
@click.argument("registry_spec", metavar="R")
@quiet_option
def registry_pull(repo, registry_spec, quiet):
    """Copy the parts of Hub dataset ORG/NAME that registry folder R lacks (R is created if missing)."""
    from huref.registry.hub import pull, repo_id_of

    count = pull(repo_id_of(repo), registry_spec)
    click.echo(f"pulled {count} new file(s) into {registry_spec}")


@registry_group.command("calibrate")
@click.argument("registry_spec", metavar="R")
@click.option("-o", "--output", default=None, metavar="PATH", help="Also write the refitted null panel (.json).")
@json_option
@quiet_option
def registry_calibrate(registry_spec, output, as_json, quiet):
    """Refit the lineage null panel from R's pairs declared or measured unrelated, beside the shipped one."""
    import json
    import os
    from pathlib import Path

    from huref.cli import Run, finite_json
    from huref.outputs import check_outputs
    from huref.registry.calibrate import calibrate
    from huref.registry.hub import open_registry

    registry = open_registry(registry_spec)
    if output:
        check_outputs([(output, "json")])  # suffix and folder, before any work
        if Path(os.path.realpath(registry.root)) in Path(os.path.realpath(output)).parents:
            raise HurefError(f"{output}: refusing to write an output inside the registry it reads")
    run = Run("calibrate", quiet).start(len(registry.parts()))
    report = calibrate(registry, run.step)
    text = finite_json(report)
    if output:
        run.write([(output, (json.dumps(report["panel"], indent=1) + "\n").encode(), "the refitted null panel")])
    run.finish()
    if as_json:
        click.echo(text)
        return
    shipped, fitted, limits = report["shipped"], report["registry"], report["thresholds"]
    click.echo(f"shipped tiny-scale panel: mean {shipped['mean']:+.4f}  std {shipped['std']:.4f}  n {shipped['n']}  "
               f"same-base from {limits['shipped']:+.4f}")
    click.echo(f"this registry's panel:    mean {fitted['mean']:+.4f}  std {fitted['std']:.4f}  n {fitted['n']}  "
               f"same-base from {limits['registry']:+.4f}")
    click.echo(f"{len(report['pairs'])} pairs judged, {report['skipped']} sharing too few probe tokens; "
               f"{len(report['changed'])} verdicts change under the refitted panel; "
               f"{len(report['conflicts'])} declared unrelated yet same-base")
    for p in report["conflicts"]:
        click.echo(f"  conflict: {p['a']} / {p['b']} (statistic {p['statistic']:+.4f})")


def query_model(model_spec, revision, prefilter, run):
    """Open MODEL (models only: identify and audit read its layers) and compute its query."""
    from huref.lineage import depth_layers, verdict_stride
    from huref.registry.identify import query_of
    from huref.sources import load_model

    model = load_model(model_spec, revision)
    run.start(1 + len(depth_layers(model, verdict_stride(model))) + (3 if prefilter == "latent" else 0))
    return model, query_of(model, prefilter, run.step)


@click.command("identify")
@click.argument("model")
@click.option("-r", "--registry", "registry_spec", required=True, help=REGISTRY_HELP)
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True,
              help="Candidates the prefilter passes to the lineage verdict.")
@click.option("--prefilter", type=click.Choice(["summary", "latent"]), default="summary", show_default=True,
              help="summary: the lineage statistic on the sketches' first probe tokens; latent: fingerprint cosine.")
@json_option
@click.option("--revision", default=None, help="Hub revision for a Hub model.")
@panel_option
@quiet_option
def identify_command(model, registry_spec, top, prefilter, as_json, revision, panel_path, quiet):
    """Which registered models MODEL derives from: exit 0 when a base is found, 1 when none, 2 on bad input."""
    from huref.cli import Run, finite_json
    from huref.registry.hub import open_registry
    from huref.registry.identify import identify

    panel = load_panel(panel_path)
    registry = open_registry(registry_spec)
    run = Run("identify", quiet)
    _, query = query_model(model, revision, prefilter, run)
    found = identify(registry, query, top, prefilter, panel, run.step)
    text = finite_json(found.to_json())
    run.finish()
    click.echo(text if as_json else found.text())
    return found.exit_code


@click.command("audit")
@click.argument("model")
@click.option("-r", "--registry", "registry_spec", default=None, help=REGISTRY_HELP + " Without it, claims are "
              "checked against the claimed bases themselves and no undisclosed base is searched for.")
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True,
              help="Candidates the prefilter passes to the lineage verdict when searching undisclosed bases.")
@json_option
@click.option("--format", "output_format", type=click.Choice(["text", "md"]), default="text", show_default=True,
              help="md: a Markdown table (a CI step summary).")
@click.option("--strict", is_flag=True, help="Exit 1 also when a claim is unverifiable.")
@click.option("--revision", default=None, help="Hub revision for a Hub model.")
@panel_option
@quiet_option
def audit_command(model, registry_spec, top, as_json, output_format, strict, revision, panel_path, quiet):
    """Check MODEL's declared base models against its weights, then look for undisclosed ones.
    Exit 0 clean, 1 a contradicted claim or an undisclosed base (--strict: also an unverifiable claim),
    2 bad input."""
    from huref.cli import Run, finite_json
    from huref.registry.audit import audit
    from huref.registry.entries import declarations
    from huref.registry.hub import open_registry

    panel = load_panel(panel_path)
    registry = open_registry(registry_spec) if registry_spec else None
    run = Run("audit", quiet)
    opened, query = query_model(model, revision, "summary", run)
    result = audit(query, declarations(opened), registry, top, panel, strict, run.step)
    text = finite_json(result.to_json())
    run.finish()
    click.echo(text if as_json else result.markdown() if output_format == "md" else result.text())
    return result.exit_code


@click.command("atlas")
@click.argument("registry_spec", metavar="R")
@click.option("-o", "--output", default=None, help="The page to write (.html, self-contained).")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout: the atlas.")
@click.option("--top", type=click.IntRange(min=1), default=4, show_default=True,
              help="Neighbours of each entry, by the summary prefilter, judged by the lineage verdict.")
@click.option("--dogs/--no-dogs", default=True, show_default=True, help="Draw each root's dog (the default generator).")
@panel_option
@quiet_option
def atlas_command(registry_spec, output, as_json, top, dogs, panel_path, quiet):
    """The derivation graph of registry R: families found by the weights, roots with their dogs,
    edges with z and the relation found, and what models declare that their weights contradict."""
    import os

    from huref.cli import Run, finite_json, load_dog_generator
    from huref.files import write_atomically
    from huref.registry.atlas import atlas_html, build_atlas
    from huref.registry.hub import open_registry

    if output is None and not as_json:
        raise HurefError("give -o PAGE.html, --json, or both")
    registry = open_registry(registry_spec)
    if output and os.path.realpath(output).startswith(os.path.realpath(registry.root) + os.sep):
        raise HurefError(f"{output}: inside the registry folder (an output never goes among the inputs)")
    panel = load_panel(panel_path)
    run = Run("atlas", quiet)
    generator = load_dog_generator(None, run)[0] if dogs else None
    atlas = build_atlas(registry, top, panel, generator, run.step)
    text = finite_json(atlas)
    page = atlas_html(atlas) if output else None
    run.finish()
    if output:
        write_atomically(output, page.encode())
    if as_json:
        click.echo(text)
    elif output:
        click.echo(f"{output}: {len(atlas['entries'])} models, {atlas['families']} families, "
                   f"{len(atlas['edges'])} derivation edges, {len(atlas['mismatches'])} mismatches")
    return 0


def register(cli: click.Group) -> None:
    """Add the registry commands to the main `huref` group."""
    for command in (registry_group, identify_command, audit_command, atlas_command):
        cli.add_command(command)
