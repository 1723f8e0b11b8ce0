"""One input path and one settings rule: what every command does before any expensive work, and
the small things a user hits (outputs over inputs, JPEG, labels without local paths, quiet, Hub
offline)."""

import json
import os
import time

import pytest

from huref.errors import HurefError
from huref.inputs import Settings, open_subject, settings_for
from huref.progress import WIDTH, Progress


@pytest.fixture(scope="module")
def fingerprints(tmp_path_factory):
    """demo:base fingerprinted with 32 tokens and with the default 1024-token cap, by the real command."""
    from huref import cli

    folder = tmp_path_factory.mktemp("fps")
    made = {}
    for tag, extra in (("few", ["--tokens", "32"]), ("default", [])):
        fp = folder / f"{tag}.json"
        with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as done:
            patch.setattr("sys.argv", ["huref", "fingerprint", "demo:base", "-o", str(folder / f"{tag}.png"),
                                       "--save-fingerprint", str(fp), "-q", *extra])
            cli.main()
        assert done.value.code == 0
        made[tag] = fp
    return made


def test_fingerprints_made_with_other_token_counts_are_refused(fingerprints, huref_cli):
    """Was a confident 'unrelated' with exit 0: now one line and exit 2."""
    code, out, err = huref_cli("compare", str(fingerprints["few"]), str(fingerprints["default"]))
    assert code == 2 and out == "" and "32 tokens" in err and "cannot be compared" in err
    assert err.count("\n") == 1


def test_a_fingerprint_of_the_old_default_layers_is_refused_against_the_new_default(fingerprints, tmp_path,
                                                                                    huref_cli):
    """huref before the middle-layer rule wrote layer_choice "default" for the last two layers (and no
    encoder_version: encoder version 1): such a file must not pass for one made by the middle-layer rule
    of the same encoder, nor be compared with a current fingerprint (another encoder), and a model
    follows its layers."""
    current = json.loads(fingerprints["default"].read_text())
    n = current["n_layers"]
    written = {}
    for name, choice, layers in (("legacy", "default", [n - 2, n - 1]), ("middle", "middle", [1, 2])):
        old = dict(current, layer_choice=choice, layers=layers)
        del old["encoder_version"]
        written[name] = tmp_path / f"{name}.json"
        written[name].write_text(json.dumps(old))
    code, out, err = huref_cli("compare", str(written["legacy"]), str(written["middle"]))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "layers [-2, -1] from the end" in err and "the default layers" in err and "cannot be compared" in err
    code, out, err = huref_cli("compare", str(written["legacy"]), str(fingerprints["default"]))
    assert code == 2 and out == "" and err.count("\n") == 1 and "encoder version 1" in err
    code, out, _ = huref_cli("compare", "demo:offspring", str(written["legacy"]), "--json", "-q")
    assert code == 0 and json.loads(out)["a"]["layers"] == [n - 2, n - 1]


def test_a_model_follows_the_fingerprint_it_is_compared_with(fingerprints, huref_cli):
    code, out, err = huref_cli("compare", "demo:offspring", str(fingerprints["few"]), "--json", "-q")
    report = json.loads(out)
    assert code == 0 and report["a"]["n_tokens"] == 32 and report["verdict"] == "same-base"


def test_settings_are_checked_before_work():
    with pytest.raises(HurefError, match="too few"):
        Settings(n_tokens=3)
    base = open_subject("demo:base")
    with pytest.raises(HurefError, match="out of range"):
        settings_for([base], Settings(layers=(9,)))
    assert base.steps(Settings()) == 3 and base.steps(Settings(layers=(0, 1, 2))) == 4


def test_fingerprint_names_no_local_path(fingerprints, tmp_path, huref_cli):
    assert json.loads(fingerprints["few"].read_text())["model"] == "demo:base"
    from huref.demo import demo_model_dir

    local = demo_model_dir("independent")
    fp = tmp_path / "fp.json"
    code, _, err = huref_cli("fingerprint", str(local), "-o", str(tmp_path / "d.png"), "--save-fingerprint", str(fp),
                             "-q")
    assert code == 0, err
    text = fp.read_text()
    assert json.loads(text)["model"] == local.name and str(local.parent) not in text
    code, _, _ = huref_cli("fingerprint", str(local), "-o", str(tmp_path / "d.png"), "--save-fingerprint", str(fp),
                           "--name", "acme/model-7b", "-q")
    assert code == 0 and json.loads(fp.read_text())["model"] == "acme/model-7b"


def test_outputs_never_overwrite_inputs_or_each_other(fingerprints, tmp_path, huref_cli):
    from huref.demo import demo_model_dir

    model = demo_model_dir("base")
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    cases = [
        ["invariants", str(model), "-o", str(model / "model.safetensors")],
        ["invariants", str(model), "-o", str(model / "extra.safetensors")],
        ["fingerprint", str(model), "-o", str(model / "config.png")],
        ["fingerprint", "demo:base", "-o", str(tmp_path / "x.png"), "--save-fingerprint", str(tmp_path / "x.png")],
        ["compare", str(fingerprints["few"]), str(model), "--image", str(model / "side.png")],
        ["show", str(fingerprints["few"]), "-o", str(fingerprints["few"])],
    ]
    for args in cases:
        code, out, err = huref_cli(*args)
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert not (tmp_path / "x.png").exists()


def test_jpeg_output_and_unknown_image_kind(fingerprints, tmp_path, huref_cli):
    from PIL import Image

    code, _, err = huref_cli("show", str(fingerprints["few"]), "-o", str(tmp_path / "dog.jpg"), "-q")
    assert code == 0, err
    with Image.open(tmp_path / "dog.jpg") as picture:
        assert picture.format == "JPEG" and picture.size == Image.open(fingerprints["few"].with_suffix(".png")).size
    code, _, err = huref_cli("show", str(fingerprints["few"]), "-o", str(tmp_path / "dog.gif"))
    assert code == 2 and ".png, .jpg or .jpeg" in err
    assert not (tmp_path / "dog.gif").exists()


def test_quiet_silences_every_notice(fingerprints, tmp_path, huref_cli, monkeypatch):
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path / "cache"))  # no afhqdog there: the bundled-generator notice
    code, _, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "a.png"), "-q")
    assert code == 0 and err == ""
    code, _, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "b.png"))
    assert code == 0 and "bundled" in err
    code, _, err = huref_cli("fingerprint", "demo:base", "--layers", "9", "-o", str(tmp_path / "c.png"))
    assert code == 2 and "bundled" not in err  # no notice before an unrelated error


def test_verify_refuses_a_threshold_that_is_not_a_number(fingerprints, huref_cli):
    code, out, err = huref_cli("verify", "demo:offspring", "--base", str(fingerprints["few"]), "--min-ics", "nan")
    assert code == 2 and out == "" and "finite" in err


def test_report_marks_a_pair_it_cannot_compare(fingerprints, tmp_path, huref_cli):
    page = tmp_path / "r.html"
    code, _, err = huref_cli("report", str(fingerprints["few"]), str(fingerprints["default"]), "demo:independent",
                             "-o", str(page), "-q")
    assert code == 0, err
    text = page.read_text()
    assert "not compared" in text and "n/a" in text and "32 tokens" in text
    assert str(fingerprints["few"].parent) not in text.split("<h2>Fingerprints")[1].split("</div>")[0]
    assert "<th>verdict</th>" in text


def test_hub_id_without_network_fails_fast(tmp_path, monkeypatch, huref_cli):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_constants, "ENDPOINT", "https://127.0.0.1:9")  # nothing listens on the discard port
    start = time.monotonic()
    code, out, err = huref_cli("compare", "acme/absent-model", "demo:base", "-q")
    assert time.monotonic() - start < 2.5
    assert code == 2 and err.count("\n") == 1 and "acme/absent-model" in err and "cannot be reached" in err


def test_local_paths_that_do_not_exist_are_not_sent_to_the_hub(tmp_path, huref_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for spec in ("./models/llama", "models/llama", str(tmp_path / "x" / "y"), "a/b/c", "weights/m.gguf"):
        code, _, err = huref_cli("invariants", spec, "-o", str(tmp_path / "o.safetensors"))
        assert code == 2 and "no such file or directory" in err, (spec, err)


def test_progress_lines_fit_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    progress = Progress("fingerprint", 3)
    progress.enabled = True
    progress.step("reading tensors of " + "a-very-long-model-name/" * 8)
    err = capsys.readouterr().err
    assert len(err.split("\r")[-1].replace("\033[K", "")) <= WIDTH


def test_fifo_input_is_not_opened(tmp_path, huref_cli):
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    code, _, err = huref_cli("invariants", str(fifo), "-o", str(tmp_path / "o.safetensors"))
    assert code == 2 and "not a regular file" in err


def test_gguf_label_is_its_published_name(tiny_zoo, tmp_path):
    """A GGUF file is labelled by its general.name (what fingerprints publish), not its local path."""
    import gguf

    from huref.sources import load_model
    from huref_lab.gguf_convert import convert

    path = convert(tiny_zoo("llama"), tmp_path / "local-file-name.gguf", "F32")
    name = gguf.GGUFReader(str(path)).get_field("general.name").contents()
    assert name and load_model(str(path)).label == name
