"""The first hour of a new user (issue #23): one option vocabulary, outputs checked before any work,
real layer indices and model names, numbers a reader cannot misread, pictures a person can read,
docs that match the tool. Runs on the demo models and the tiny zoo."""

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import click
import pytest
import torch
from PIL import Image

from huref import cli
from test_lineage import restacked

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pruned_pair(tiny_zoo, tmp_path_factory):
    """A tiny llama (3 layers) and a copy with its middle layer dropped (2 layers)."""
    llama = tiny_zoo("llama")
    return llama, restacked(llama, tmp_path_factory.mktemp("pruned") / "pruned", [0, 2])


@pytest.fixture(scope="module")
def fingerprint_file(tmp_path_factory):
    """demo:independent's FP.json under a file name that is not the model's name."""
    from huref import cli as module

    folder = tmp_path_factory.mktemp("fp")
    fp = folder / "published.json"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
        patch.setattr("sys.argv", ["huref", "fingerprint", "demo:independent", "-o", str(folder / "dog.png"),
                                   "--save-fingerprint", str(fp), "-q"])
        module.main()
    assert done.value.code == 0
    return fp


def commands():
    """(name, click command) of every command, groups' subcommands included."""
    for name, command in cli.cli.commands.items():
        if isinstance(command, click.Group):
            yield from ((f"{name} {sub}", c) for sub, c in command.commands.items())
        else:
            yield name, command


# 1. One option vocabulary

def test_every_command_that_writes_a_picture_or_page_takes_o_output():
    writers = {name: command for name, command in commands()
               if any(p.name in ("output", "image") for p in command.params)}
    assert {"invariants", "compare", "lineage", "fingerprint", "show", "report", "open"} <= set(writers)
    for name, command in writers.items():
        visible = [p for p in command.params if not getattr(p, "hidden", False) and p.name in ("output", "image")]
        assert [sorted(p.opts) for p in visible] == [["--output", "-o"]], name


def test_compare_and_lineage_write_with_o_and_say_so(pruned_pair, tmp_path, huref_cli):
    llama, pruned = pruned_pair
    code, _, err = huref_cli("compare", str(llama), str(pruned), "-o", str(tmp_path / "pair.png"), "--tokens", "64",
                             "--generator", "bundled")
    assert code == 0 and f"wrote {tmp_path / 'pair.png'}" in err and Image.open(tmp_path / "pair.png").format == "PNG"
    code, _, err = huref_cli("lineage", str(llama), str(pruned), "-o", str(tmp_path / "map.png"))
    assert code == 0 and f"wrote {tmp_path / 'map.png'}" in err
    code, _, err = huref_cli("lineage", str(llama), str(pruned), "-o", str(tmp_path / "quiet.png"), "-q")
    assert code == 0 and err == ""


def test_usage_errors_carry_a_hint(huref_cli, tmp_path):
    code, out, err = huref_cli("verify", "demo:offspring", "demo:base")
    assert code == 2 and out == "" and "--base" in err and err.count("\n") == 1
    code, _, err = huref_cli("fingerprint", "demo:base", "--image", str(tmp_path / "x.png"))
    assert code == 2 and "-o/--output" in err and err.count("\n") == 1
    code, _, err = huref_cli("show", "x.json", "--bogus")
    assert code == 2 and "huref show --help" in err
    code, _, err = huref_cli("compare", "a.json", "b.json", "--imag", "x.png")  # no guess at the hidden --image
    assert code == 2 and "--image" not in err and "huref compare --help" in err


def test_lineage_takes_layers(pruned_pair, huref_cli):
    llama, pruned = pruned_pair
    code, out, err = huref_cli("lineage", str(llama), str(pruned), "--layers", "0,-1", "--json", "-q")
    found = json.loads(out)
    assert code == 0, err
    assert found["layers_a"] == [0, 2] and found["layers_b"] == [0, 1] and len(found["map"]) == 2
    code, _, err = huref_cli("lineage", str(llama), str(pruned), "--layers", "0", "--stride", "2")
    assert code == 2 and "not both" in err


# 2. Outputs checked before any work

def test_a_missing_output_folder_is_refused_before_any_work(monkeypatch, tmp_path, huref_cli):
    def no_work(*args, **kwargs):
        raise AssertionError("terms computed before the output folder was checked")

    monkeypatch.setattr("huref.inputs.invariant_terms", no_work)
    for args in (["fingerprint", "demo:base", "-o", str(tmp_path / "nodir" / "x.png")],
                 ["fingerprint", "demo:base", "-o", str(tmp_path / "x.png"), "--save-fingerprint",
                  str(tmp_path / "nodir" / "fp.json")],
                 ["invariants", "demo:base", "-o", str(tmp_path / "nodir" / "t.safetensors")],
                 ["report", "demo:base", "demo:offspring", "-o", str(tmp_path / "nodir" / "r.html")]):
        code, out, err = huref_cli(*args)
        assert code == 2 and "no such folder" in err and "nodir" in err, (args, err)
    assert list(tmp_path.iterdir()) == []


# 3. Real layer indices and model names

def test_per_layer_lines_name_both_models_layers(pruned_pair, huref_cli):
    llama, pruned = pruned_pair
    code, out, _ = huref_cli("compare", str(llama), str(pruned), "--layers", "0,-1", "--verdict", "ics", "--json",
                             "-q", "--tokens", "64")
    report = json.loads(out)
    assert code == 0 and report["a"]["layers"] == [0, 2] and report["b"]["layers"] == [0, 1]
    assert [(r["layer_a"], r["layer_b"]) for r in report["layer_ics"]] == [(0, 0), (2, 1)]
    code, text, _ = huref_cli("compare", str(llama), str(pruned), "--layers", "0,-1", "--verdict", "ics", "-q",
                              "--tokens", "64")
    row = next(line for line in text.splitlines() if line.strip().startswith("2 / 1"))
    assert f"{report['layer_ics'][1]['ics']:+.4f}" in row


def test_layer_maps_are_labelled_by_layer_index_and_model_name():
    from huref.lineage import lineage_image

    values = torch.rand(3, 3, generator=torch.Generator().manual_seed(0)).double()
    path = [(0, 0), (1, 1), (2, 2)]
    by_position = lineage_image(values, path, ("base", "derived"))
    by_layer = lineage_image(values, path, ("base", "derived"), layers_a=[0, 14, 28], layers_b=[0, 8, 16])
    other_names = lineage_image(values, path, ("smollm2", "gemma3"), layers_a=[0, 14, 28], layers_b=[0, 8, 16])
    assert by_position.tobytes() != by_layer.tobytes()
    assert by_layer.tobytes() != other_names.tobytes()


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))


def test_report_names_models_shows_codes_as_text_and_maps_with_real_layers(fingerprint_file, tmp_path, huref_cli):
    """A FP.json appears under the model name it holds; each dog is the generator's picture without the
    code strip (square, at least 256 px, not drawn pixelated), its code is text; the lineage map is the
    one `huref lineage` draws for the verdict's layers, with the models' names."""
    from huref.comparison import lineage_pair
    from huref.fingerprint import latent, load_fingerprint
    from huref.inputs import Settings, open_subject
    from huref.render import MIN_SIDE, latent_code

    page = tmp_path / "r.html"
    code, _, err = huref_cli("report", "demo:base", "demo:offspring", str(fingerprint_file), "-o", str(page), "-q")
    assert code == 0, err
    text = page.read_text()
    dogs = text.split("<h2>Fingerprints")[1].split("<h2>")[0]
    assert "3. demo:independent" in dogs and "published.json" in dogs and "pixelated" not in text
    parser = Images()
    parser.feed(text)
    pictures = [Image.open(io.BytesIO(base64.b64decode(i["src"].split(",", 1)[1]))) for i in parser.images]
    for picture in pictures[:3]:
        assert picture.width == picture.height >= MIN_SIDE
    codes = re.findall(r"<div class='code'>([0-9A-Z ]{19})</div>", text)
    # each dog's code is the code of the latent `huref fingerprint` publishes (encoder version 2: every layer)
    subjects = [open_subject(f"demo:{name}") for name in ("base", "offspring")]
    published = [latent_code(s.latent(Settings())) for s in subjects] + [latent_code(latent(load_fingerprint(fingerprint_file)))]
    assert codes == published
    shared = [sum(x == y for x, y in zip(codes[0].replace(" ", ""), other.replace(" ", ""))) for other in codes[1:]]
    assert shared[0] >= 6 > shared[1]  # the disguised fine-tune keeps most of the base's code, the stranger not
    expected = lineage_pair(*subjects, Settings()).image()
    assert pictures[3].tobytes() == expected.tobytes()


# 4. Numbers a reader cannot misread

def test_p_values_are_capped_and_their_panel_named(huref_cli):
    from huref.statistics import null_panel

    code, text, _ = huref_cli("lineage", "demo:base", "demo:offspring", "-q")
    assert code == 0 and "p < 0.0001" in text and not re.search(r"p \d(\.\d+)?e-\d+", text)
    assert f"{null_panel()['n']} pairs" in text and "tiny-scale" in text
    assert "false-positive rate" not in text and "1 in 10,000 unrelated pairs is called same-base" in text
    assert "8 evenly spaced layers" in text  # why compare's z differs from lineage's


def test_compare_text_explains_its_numbers(huref_cli):
    code, text, _ = huref_cli("compare", "demo:base", "demo:offspring", "-q")
    assert code == 0 and "p < 0.0001" in text and not re.search(r"p \d(\.\d+)?e-\d+", text)
    assert "at most 8 evenly spaced layers" in text and "`huref lineage` reads every layer" in text
    assert "naive baseline" in text.split("PCS", 1)[1].splitlines()[0]


def test_compare_json_keys_do_not_collide(huref_cli):
    code, out, _ = huref_cli("compare", "demo:base", "demo:offspring", "--json", "-q", "--verdict", "ics")
    report = json.loads(out)
    assert code == 0 and "layers" not in report and "terms" not in report
    assert [(r["layer_a"], r["layer_b"]) for r in report["layer_ics"]] == list(zip(report["a"]["layers"],
                                                                                   report["b"]["layers"]))
    assert report["kind"] == "ics" and report["decided_by"] == report["ics_judgement"]["decided_by"] == "ics panel"


def test_verify_also_lines_give_verdicts(huref_cli):
    code, out, _ = huref_cli("verify", "demo:offspring", "--base", "demo:base", "--base", "demo:independent", "-q")
    also = [line for line in out.splitlines() if line.strip().startswith("also:")]
    assert code == 0 and len(also) == 1 and "demo:independent" in also[0] and ": unrelated" in also[0]
    code, out, _ = huref_cli("verify", "demo:offspring", "--base", "demo:base", "--base", "demo:independent", "--json",
                             "-q")
    assert [m["verdict"] for m in json.loads(out)["matches"]] == ["same-base", "unrelated"]


# 6. Suffixes

def test_outputs_of_the_wrong_kind_are_refused(tmp_path, huref_cli):
    cases = [(["report", "demo:base", "demo:offspring", "-o", str(tmp_path / "r.pdf")], ".html"),
             (["fingerprint", "demo:base", "-o", str(tmp_path / "d.png"), "--save-fingerprint",
               str(tmp_path / "fp.png")], ".json"),
             (["invariants", "demo:base", "-o", str(tmp_path / "t.bin")], ".safetensors")]
    for args, suffix in cases:
        code, out, err = huref_cli(*args)
        assert code == 2 and suffix in err and err.count("\n") == 1, (args, err)
    assert list(tmp_path.iterdir()) == []


# 7. One notice, said once

def test_the_generator_notice_does_not_repeat_the_program_name(tmp_path, huref_cli, monkeypatch):
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path / "cache"))  # no afhqdog there: the bundled-generator notice
    code, _, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "dog.png"), "--tokens", "32")
    assert code == 0 and "huref: note: using the bundled" in err and "huref: note: huref:" not in err


# 8. Pictures a person can read

def test_layer_maps_have_a_colour_bar_and_values():
    from huref.lineage import ALIGNED, _colour, lineage_image

    values = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64)
    image = lineage_image(values, [(0, 0), (1, 1)], ("A", "B"))
    pixels = image.load()
    assert image.width >= 400
    # a vertical ramp from the top colour (1) down to the bottom colour (0), right of the map
    ramp = {_colour(k / 2000) for k in range(2001)}
    columns = [[pixels[x, y] for y in range(image.height) if pixels[x, y] in ramp] for x in range(image.width)]
    bars = [c for c in columns if len(set(c)) > 100]
    assert bars and bars[0][0] == _colour(1.0) and bars[0][-1] == _colour(0.0)
    # the value is written in its cell: inside the cell of 0.9, pixels that are neither its fill nor its outline
    fill = _colour(0.9)
    where = [(x, y) for x in range(image.width) for y in range(image.height) if pixels[x, y] == fill]
    xs, ys = [x for x, _ in where], [y for _, y in where]
    ink = [(x, y) for x in range(min(xs), max(xs)) for y in range(min(ys), max(ys))
           if pixels[x, y] not in (fill, ALIGNED)]
    assert len(ink) > 20


def test_help_texts_point_to_nothing_a_wheel_lacks():
    for name, command in commands():
        texts = [command.help or ""] + [getattr(p, "help", "") or "" for p in command.params]
        assert not any("docs/" in text for text in texts), name


# 9. Docs that match the tool

def test_readme_thresholds_and_figures_match_the_tool():
    from huref.similarity import thresholds

    readme = (REPO / "README.md").read_text()
    fixed = thresholds()
    for sentence in re.split(r"(?<=\.) ", readme):
        if f">= {fixed['same_base']}" in sentence:
            assert "--layers" in sentence, sentence
    real = json.loads((REPO / "docs" / "real_models.json").read_text())
    ics = {(p["a"], p["b"]): p["ics"] for p in real["pairs"]}
    assert (f"SmolLM2-135M vs its fine-tune {ics['smollm2.gguf', 'smollm2-vim.st']:.5f}, Gemma-3-270M vs its "
            f"fine-tune {ics['gemma3.gguf', 'gemma3-vim.st']:.3f}, the two against each other "
            f"{ics['smollm2.gguf', 'gemma3.gguf']:.3f}") in readme
    code_claim = next(s for s in re.split(r"(?<=\.) ", readme) if "6 or more" in s)
    assert "0.95" in code_claim


def test_the_real_models_doc_matches_the_tool():
    from huref.fingerprint import latent_panel_file
    from huref.invariants import resolve_layers
    from huref.statistics import null_panel, statistic_at

    real = json.loads((REPO / "docs" / "real_models.json").read_text())
    latent_cutoff = f"{statistic_at(null_panel(latent_panel_file(1))):.3f}"
    real_doc = (REPO / "docs" / "REAL_MODELS.md").read_text()
    assert "same-base at >= 0.5" not in real_doc and f"same-base from {latent_cutoff}" in real_doc
    assert f"{real['dogs']['threshold']:.3f}" == latent_cutoff
    # the real models' dogs are encoder version 1's: drawn from each model's default layers
    assert {label: resolve_layers(m["n_layers"], None) for label, m in real["models"].items()} == real["dogs"]["layers"]


# Issue #24 item 2: one plan says what a job reads and how many progress steps it takes

def test_the_plan_counts_the_steps_the_work_reports(fingerprint_file):
    from huref.comparison import compare_pair, plan_pairs, verify, verify_pairs
    from huref.inputs import Policy, Settings, open_subject, settings_for
    from huref.report import make_report, plan_report

    def opened(*specs, **policy):
        subjects = [open_subject(spec) for spec in specs]
        return subjects, settings_for(subjects, Settings(n_tokens=64, policy=Policy(**policy)))

    for specs, policy in ((("demo:base", "demo:offspring"), {}), (("demo:base", "demo:offspring"), {"source": "ics"}),
                          (("demo:base", str(fingerprint_file)), {})):
        subjects, settings = opened(*specs, **policy)
        plan, heard = plan_pairs([(*subjects, settings)]), []
        compare_pair(*subjects, settings, heard.append)
        assert plan.steps == len(heard) > 0, (specs, policy)
    # two models judged by lineage read both models' terms and their whole-depth terms; by ICS only the terms
    subjects, settings = opened("demo:base", "demo:offspring")
    assert len(plan_pairs([(*subjects, settings)]).reads) == 4
    subjects, settings = opened("demo:base", "demo:offspring", source="ics")
    assert len(plan_pairs([(*subjects, settings)]).reads) == 2
    model, *bases = [open_subject(spec) for spec in ("demo:offspring", "demo:base", "demo:independent",
                                                      str(fingerprint_file))]
    settings, heard = Settings(), []
    plan = plan_pairs(verify_pairs(model, bases, settings))
    verify(model, bases, settings, heard.append)
    assert plan.steps == len(heard)
    subjects, settings = opened("demo:base", "demo:independent", "demo:offspring")
    plan, heard = plan_report(subjects, settings), []
    from huref.generators import load_generator

    make_report(subjects, load_generator("bundled")[0], settings, progress=heard.append)
    assert plan.steps + 1 == len(heard)  # + rendering
