"""The click options every command shares that need nothing of huref.cli, so command modules
registered on the main group (huref.registry.commands) take them at import without a cycle."""

import click


def quiet_option(f):
    return click.option("--quiet", "-q", is_flag=True, help="No progress, notices or 'wrote' lines on stderr.")(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout.")(f)
