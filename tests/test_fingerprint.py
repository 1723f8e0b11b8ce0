"""The fingerprint product: huref fingerprint / show / verify / compare / report, FP.json and its commitment.

Runs on the demo models (`demo:base`, its disguised fine-tune `demo:offspring`, an unrelated
`demo:independent`), the shipped encoder and the bundled generator.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest
import torch
import torch.nn.functional as F

from huref import cli
from huref.encoder import ENCODER_VERSION, LATENT_RULE, LATENT_TOKENS, encoder_digest
from huref.fingerprint import (check_opening, compare_fingerprints, commitment_digest, load_fingerprint, opens,
                               private_path, read_private, save_opening)
from huref.inputs import Settings, open_subject
from huref.invariants import Terms, invariant_terms, load_terms, save_terms
from huref.lineage import lineage, whole_depth_terms
from huref.similarity import compare_terms
from huref.sources import load_model
from huref.statistics import ICS_PANEL_FILE, LATENT_PANEL_FILE, null_panel, statistic_at


# The generator's pixels can differ by one level between CPU thread counts (the order of a convolution's
# sums); a child process runs on one thread, as this one does (conftest), so their pictures compare.
ONE_THREAD = dict(os.environ, OMP_NUM_THREADS="1")


def fingerprint_command(name, folder):
    png, fp = folder / f"{name}.png", folder / f"{name}.json"
    return png, fp, ["fingerprint", f"demo:{name}", "-o", str(png), "--generator", "bundled",
                     "--save-fingerprint", str(fp), "--json"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Fingerprints of the three demo models made by the real command's entry point in this process
    (test_png_is_byte_identical_across_runs runs it again in a separate one)."""
    folder = tmp_path_factory.mktemp("published")
    made = {}
    for name in ("base", "offspring", "independent"):
        png, fp, args = fingerprint_command(name, folder)
        out = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            patch.setattr(sys, "argv", ["huref", *args])
            cli.main()
        assert done.value.code == 0
        made[name] = {"png": png, "fp": fp, "json": json.loads(out.getvalue())}
    return made


def test_png_is_byte_identical_across_runs(published, tmp_path):
    again = tmp_path / "again.png"
    result = subprocess.run([sys.executable, "-m", "huref.cli", "fingerprint", "demo:base", "-o", str(again),
                             "--generator", "bundled", "-q"], capture_output=True, text=True, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == published["base"]["png"].read_bytes()
    assert published["base"]["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_output_matches_the_saved_fingerprint(published):
    printed, saved = published["base"]["json"], load_fingerprint(published["base"]["fp"])
    assert printed["image"] == str(published["base"]["png"])
    for key, value in saved.items():
        assert printed[key] == value
    z = torch.tensor(saved["latent"])
    assert z.shape == (512,) and abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-4
    # the latent reads every layer of the 4-layer demo model, over at most LATENT_TOKENS probe tokens
    assert saved["model_type"] == "llama" and saved["n_tokens"] == LATENT_TOKENS and saved["layers"] == [0, 1, 2, 3]
    assert saved["layer_choice"] == LATENT_RULE and saved["encoder_version"] == ENCODER_VERSION == 2
    assert saved["generator"]["name"] == "bundled" and saved["encoder_sha256"] == encoder_digest(2)


def test_round_trip_fingerprint_then_show(published, tmp_path, huref_cli):
    shown = tmp_path / "shown.png"
    code, _, err = huref_cli("show", str(published["base"]["fp"]), "-o", str(shown))
    assert code == 0, err
    assert shown.read_bytes() == published["base"]["png"].read_bytes()


def test_relatives_share_a_dog_and_strangers_do_not(published):
    fps = {name: load_fingerprint(item["fp"]) for name, item in published.items()}
    z = {name: torch.tensor(fp["latent"]) for name, fp in fps.items()}
    related = float(F.cosine_similarity(z["base"], z["offspring"], dim=0))
    unrelated = float(F.cosine_similarity(z["base"], z["independent"], dim=0))
    assert related > unrelated + 0.3
    # the calibrated latent verdict: the shipped panel's cutoff lies between them
    same, other = compare_fingerprints(fps["base"], fps["offspring"]), compare_fingerprints(fps["base"], fps["independent"])
    assert (same["verdict"], other["verdict"]) == ("same-base", "unrelated") and same["same_base"] and not other["same_base"]
    assert same["latent_cosine"] == pytest.approx(related, abs=1e-6) and unrelated < same["threshold"] <= related


def test_commitment_opens_with_the_model_and_the_salt(published, tmp_path, huref_cli):
    """The default private file holds the salt, not the terms (under a kilobyte where the terms take
    L x 3 x n^2 float32): `huref open` recomputes the model's terms and opens the commitment with them;
    another model, salt or one changed number does not open it."""
    fp_path = published["base"]["fp"]
    fp = load_fingerprint(fp_path)
    private = private_path(fp_path)
    salt, key, stored = read_private(private)
    assert stored is None and private.stat().st_size < 1024 and salt.hex() not in fp_path.read_text()
    # the committed terms are the terms the encoder read from the model, bit for bit
    fresh = open_subject("demo:base").latent_terms(Settings())
    assert fresh.values.numel() * 4 > 1000 * private.stat().st_size
    assert commitment_digest(fresh, salt) == fp["commitment"]["sha256"] and opens(fp, fresh, salt)
    # another salt, one changed number, or reordered tokens do not open it
    assert commitment_digest(fresh, bytes(32)) != fp["commitment"]["sha256"]
    nudged = fresh.values.clone()
    nudged[1, 2, 3, 4] = torch.nextafter(nudged[1, 2, 3, 4], torch.tensor(float("inf")))
    assert not opens(fp, Terms(nudged, fresh.layers, fresh.tokens), salt)
    assert not opens(fp, Terms(fresh.values, fresh.layers, fresh.tokens[::-1]), salt)
    code, out, err = huref_cli("open", str(fp_path), "demo:base", "--json", "-q")
    assert code == 0 and json.loads(out)["opens"], err
    code, out, _ = huref_cli("open", str(fp_path), "demo:offspring", "-q")
    assert code == 1 and "weights differ" in out
    code, out, err = huref_cli("open", str(fp_path), "-q")
    assert code == 2 and out == "" and "holds only the salt" in err
    # the full opening, written on demand: the terms with the salt, checked without the model
    full = tmp_path / "opening.safetensors"
    code, _, err = huref_cli("open", str(fp_path), "demo:base", "-o", str(full))
    assert code == 0 and f"wrote {full}" in err and check_opening(fp, full)
    assert torch.equal(load_terms(full).values, fresh.values)
    tampered = tmp_path / "tampered.safetensors"
    save_opening(Terms(nudged, fresh.layers, fresh.tokens, fresh.meta), salt, tampered)
    assert not check_opening(fp, tampered)
    code, out, _ = huref_cli("open", str(fp_path), "--private", str(tampered), "-q")
    assert code == 1 and "does not open" in out


def test_save_opening_keeps_the_terms_in_the_private_file(tmp_path, huref_cli):
    fp = tmp_path / "fp.json"
    code, _, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "dog.png"), "--save-fingerprint", str(fp),
                             "--save-opening", "--tokens", "64")
    assert code == 0 and "opens the commitment anywhere" in err
    salt, key, stored = read_private(private_path(fp))
    # the terms the latent read: every layer of the 4-layer demo model
    assert key == {} and stored.values.shape == (4, 3, 64, 64) and check_opening(load_fingerprint(fp), private_path(fp))
    code, out, _ = huref_cli("open", str(fp), "-q")  # no model needed
    assert code == 0 and "bit for bit" in out
    code, _, err = huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "dog.png"), "--save-opening")
    assert code == 2 and "--save-fingerprint" in err


def test_an_every_layer_opening_compares_with_a_suspect_at_its_layers(tmp_path, huref_cli):
    fp = tmp_path / "fp.json"
    huref_cli("fingerprint", "demo:base", "-o", str(tmp_path / "dog.png"), "--save-fingerprint", str(fp),
              "--save-opening", "--tokens", "64", "-q")
    opening = str(private_path(fp))
    results = {}
    for suspect in ("demo:base", "demo:offspring", "demo:independent"):
        code, out, err = huref_cli("compare", opening, suspect, "--json", "-q")
        assert code == 0, err
        results[suspect] = json.loads(out)
    # the suspect is read at the opening's own layers (all four of the demo model), reference: the terms computed here
    reference = compare_terms(read_private(opening)[2], invariant_terms(load_model("demo:offspring"), [0, 1, 2, 3], 64))
    assert [row["layer_b"] for row in results["demo:offspring"]["layer_ics"]] == [0, 1, 2, 3]
    assert results["demo:base"]["ics"] > 0.99999 and abs(results["demo:offspring"]["ics"] - reference["ics"]) < 1e-5
    assert results["demo:offspring"]["verdict"] == "same-base" and results["demo:independent"]["verdict"] == "unrelated"


def test_verify_exit_codes_and_json(published, tmp_path, huref_cli):
    base_fp = str(published["base"]["fp"])
    code, out, _ = huref_cli("verify", "demo:offspring", "--base", base_fp, "--json")
    result = json.loads(out)
    assert code == 0 and result["derives"] and result["best"]["kind"] == "latent"
    code, out, _ = huref_cli("verify", "demo:independent", "--base", base_fp, "--json")
    assert code == 1 and not json.loads(out)["derives"]
    # a model as base: scored by ICS (the default layers: the ICS panel's cutoff) unless --min-ics is given
    code, out, _ = huref_cli("verify", "demo:offspring", "--base", "demo:base", "--json")
    result = json.loads(out)
    ics = compare_terms(invariant_terms(load_model("demo:offspring")), invariant_terms(load_model("demo:base")))["ics"]
    assert code == 0 and result["best"]["kind"] == "ics" and result["best"]["threshold"] == statistic_at(null_panel(ICS_PANEL_FILE))
    assert result["best"]["score"] == pytest.approx(ics, abs=1e-9)
    code, _, _ = huref_cli("verify", "demo:offspring", "--base", "demo:base",
                         "--min-ics", str(min(ics + 0.001, 1.01)))
    assert code == 1
    code, out, err = huref_cli("verify", "demo:offspring")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1


def test_verify_registry_reports_the_best_match(published, tmp_path, huref_cli):
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "independent.json").write_bytes(published["independent"]["fp"].read_bytes())
    save_terms(invariant_terms(load_model("demo:base")), registry / "base.safetensors")
    code, out, _ = huref_cli("verify", "demo:offspring", "--registry", str(registry), "--json")
    result = json.loads(out)
    assert code == 0 and result["best"]["base"] == str(registry / "base.safetensors")
    assert [m["kind"] for m in result["matches"]] == ["ics", "latent"]
    code, out, _ = huref_cli("verify", "demo:offspring", "--registry", str(tmp_path / "none"))
    assert code == 2


MALFORMED = {
    "not json": "{latent: [",
    "wrong format tag": json.dumps({"format": "something-else"}),
    "future version": None,  # filled from a real fingerprint below
    "short latent": None,
    "NaN in latent": None,
    "string in latent": None,
    "missing commitment": None,
    "unknown encoder version": None,
}


def malformed_text(kind, good: dict) -> str:
    if MALFORMED[kind] is not None:
        return MALFORMED[kind]
    bad = json.loads(json.dumps(good))
    if kind == "future version":
        bad["format_version"] = 99
    elif kind == "short latent":
        bad["latent"] = bad["latent"][:-1]
    elif kind == "NaN in latent":
        bad["latent"][5] = float("nan")
    elif kind == "string in latent":
        bad["latent"][5] = "0.5"
    elif kind == "unknown encoder version":
        bad["encoder_version"] = 99
    else:
        del bad["commitment"]
    return json.dumps(bad)


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_fingerprints_give_one_line_and_exit_2(kind, published, tmp_path, huref_cli):
    bad = tmp_path / "bad.json"
    bad.write_text(malformed_text(kind, load_fingerprint(published["base"]["fp"])))
    for args in (["show", str(bad), "-o", str(tmp_path / "out.png")],
                 ["compare", str(bad), str(published["base"]["fp"]), "-o", str(tmp_path / "side.png")],
                 ["verify", "demo:base", "--base", str(bad)]):
        code, out, err = huref_cli(*args)
        assert code == 2, (args, err)
        assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert str(bad) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]  # no partial output


def test_compare_accepts_fingerprints_and_draws_the_pair(published, tmp_path, huref_cli):
    side = tmp_path / "side.png"
    code, out, err = huref_cli("compare", str(published["base"]["fp"]), "demo:offspring",
                             "--json", "-o", str(side))
    report = json.loads(out)
    z_base = torch.tensor(load_fingerprint(published["base"]["fp"])["latent"])
    z_off = torch.tensor(load_fingerprint(published["offspring"]["fp"])["latent"])
    assert code == 0 and report["kind"] == "latent" and report["verdict"] == "same-base"
    assert report["latent_cosine"] == pytest.approx(float(F.cosine_similarity(z_base, z_off, dim=0)), abs=1e-6)
    assert "latent" in report["note"] and report["b"]["kind"] == "model"
    from PIL import Image

    picture = Image.open(side)
    from huref.render import MIN_SIDE

    assert picture.width > 2 * MIN_SIDE and picture.height < 2 * MIN_SIDE  # two dogs (with codes) next to each other
    code, out, _ = huref_cli("compare", str(published["base"]["fp"]),
                           str(published["independent"]["fp"]))
    assert code == 0 and "latent cosine" in out and "unrelated" in out


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_holds_dogs_matrix_and_terms(published, tmp_path, huref_cli):
    page = tmp_path / "report.html"
    code, _, err = huref_cli("report", "demo:base", "demo:offspring",
                           str(published["independent"]["fp"]), "-o", str(page), "--generator", "bundled")
    assert code == 0, err
    text = page.read_text()
    parser = Tags()
    parser.feed(text)
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    # three dogs, then the lineage map of the one pair of models
    assert len(images) == 4 and all(src.startswith("data:image/png;base64,") for src in images)
    import base64

    # the report's dog is the fingerprint's picture without the code strip (the code is text under it)
    from PIL import Image

    dog = Image.open(io.BytesIO(base64.b64decode(images[0].split(",", 1)[1])))
    card = Image.open(published["base"]["png"])
    assert dog.size == (card.width, card.width) and dog.tobytes() == card.crop((0, 0, card.width, card.width)).tobytes()
    assert published["base"]["json"]["code"] in text
    ics = compare_terms(invariant_terms(load_model("demo:base")), invariant_terms(load_model("demo:offspring")))
    assert f"{ics['ics']:+.4f}" in text and f"{ics['terms']['ffn']:+.3f}" in text
    assert text.count("<tr>") == 1 + 3 + 1 + 3  # matrix header + rows, detail header + 3 pairs
    # the model pair is decided by the calibrated lineage statistic, computed here another way
    found = lineage(*(whole_depth_terms(load_model(f"demo:{name}")) for name in ("base", "offspring")))
    assert found["verdict"] == "same-base" and f"lineage z {found['z']:+.1f}" in text
    assert text.count("lineage z") == 1 and "lineage verdict" in text.split("<h2>Per-term")[0]
    code, _, err = huref_cli("report", "demo:base", "demo:offspring", "-o", str(page), "--verdict", "ics", "-q")
    assert code == 0, err
    text = page.read_text()
    assert "lineage z" not in text and "Lineage maps" not in text and text.count("data:image/png") == 2


ATTACKED_ARCHITECTURES = ("llama", "gpt2", "qwen2_moe")


def fingerprint_latent(path) -> torch.Tensor:
    """The latent `huref fingerprint` publishes for the model at path."""
    return torch.tensor(open_subject(str(path)).record(Settings())["latent"])


def latent_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


@pytest.mark.parametrize("arch", ATTACKED_ARCHITECTURES)
def test_attacked_copies_keep_the_latent(arch, tiny_zoo, tmp_path):
    """Every valid function-preserving rewrite at once (weights all moved): the latent, read from every
    layer, is unchanged to the 7 decimals a cosine is printed with. Appending 40 tokens to the 384-token
    vocabulary adds new probe tokens (10 % of them): the latent moves more, but stays above the
    same-base threshold. An independent init stays far below it."""
    from huref_lab import attacks, tiny_models
    from huref.similarity import pcs

    layout = attacks.layout_of(tiny_models.make_config(arch).to_dict())
    rewrites = [a for a in attacks.valid_attacks(layout) if a != "append_vocabulary"]
    original = tiny_zoo(arch)
    rewritten = attacks.attack_directory(original, tmp_path / "rewritten", "+".join(rewrites), seed=1)
    appended = attacks.attack_directory(original, tmp_path / "appended", "append_vocabulary", seed=1)
    assert pcs(load_model(str(original)), load_model(str(rewritten)), list(range(tiny_models.N_LAYERS))) < 0.9
    z = {name: fingerprint_latent(path) for name, path in
         (("original", original), ("rewritten", rewritten), ("appended", appended),
          ("independent", tiny_zoo(arch, seed=1)))}
    assert f"{latent_cosine(z['original'], z['rewritten']):.7f}" == "1.0000000"
    assert not torch.equal(z["original"], z["rewritten"])  # computed afresh from moved weights, not copied
    cutoff = statistic_at(null_panel(LATENT_PANEL_FILE))  # the smallest cosine the latent verdict calls same-base
    assert latent_cosine(z["original"], z["appended"]) >= cutoff
    assert abs(latent_cosine(z["original"], z["independent"])) < cutoff / 2


def insert_identity_layer(source, target, after: int):
    """A copy of the tiny llama checkpoint at source with a layer inserted after layer `after`: a copy of
    that layer whose attention output and FFN down projections are zero, so it writes nothing and the
    model computes what it computed."""
    from huref_lab import attacks

    checkpoint = attacks.read_checkpoint(source)
    n = checkpoint.config["num_hidden_layers"]
    tensors = {}
    for name, tensor in checkpoint.tensors.items():
        if not name.startswith("model.layers."):
            tensors[name] = tensor
            continue
        index, rest = int(name.split(".")[2]), name.split(".", 3)[3]
        tensors[f"model.layers.{index + (index > after)}.{rest}"] = tensor
        if index == after:
            silent = rest in ("self_attn.o_proj.weight", "mlp.down_proj.weight")
            tensors[f"model.layers.{after + 1}.{rest}"] = torch.zeros_like(tensor) if silent else tensor.clone()
    checkpoint.tensors = tensors
    checkpoint.config = dict(checkpoint.config, num_hidden_layers=n + 1)
    return attacks.write_checkpoint(checkpoint, target)


def test_an_inserted_identity_layer_leaves_logits_and_latent(tiny_zoo, tmp_path):
    """Inserting a layer that writes nothing is function-preserving: the logits stay, and the latent,
    which passes over layers that write nothing, stays to 7 decimals."""
    from transformers import AutoModelForCausalLM

    original = tiny_zoo("llama")
    deeper = insert_identity_layer(original, tmp_path / "deeper", after=1)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = [AutoModelForCausalLM.from_pretrained(path).eval()(ids).logits for path in (original, deeper)]
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)
    record = open_subject(str(deeper)).record(Settings())
    depth = load_model(str(original)).dims.n_layers
    assert record["n_layers"] == depth + 1 and record["layers"] == [i for i in range(depth + 1) if i != 2]  # 2 passed over
    assert f"{latent_cosine(fingerprint_latent(original), torch.tensor(record['latent'])):.7f}" == "1.0000000"


def test_fingerprints_of_encoder_version_1_still_verify(published, tmp_path, huref_cli):
    """An FP.json published before encoder version 2 (no encoder_version, the version-1 latent of the two
    middle layers): a model is scored against it with version 1 and its panel; a version-2 fingerprint is
    refused against it in one line."""
    from huref.encoder import encode, load_encoder
    from huref.fingerprint import latent_panel_file, latent_record

    old = load_fingerprint(published["base"]["fp"])
    old.update(latent_record(invariant_terms(load_model("demo:base")), version=1))  # the two middle layers
    del old["encoder_version"]
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps(old))
    assert old["layers"] == [1, 2] and old["latent"] != load_fingerprint(published["base"]["fp"])["latent"]
    code, out, err = huref_cli("verify", "demo:offspring", "--base", str(legacy), "--json")
    best = json.loads(out)["best"]
    offspring = invariant_terms(load_model("demo:offspring"))
    expected = latent_cosine(encode(offspring.values, offspring.tokens, load_encoder(1)), torch.tensor(old["latent"]))
    assert code == 0 and best["decided_by"] == "latent panel" and best["score"] == pytest.approx(expected, abs=1e-9)
    assert best["threshold"] == statistic_at(null_panel(latent_panel_file(1)))
    assert best["detail"]["b"]["layers"] == [1, 2]
    code, out, _ = huref_cli("verify", "demo:offspring", "--base", str(legacy))  # the text names the panel that judged
    assert code == 0 and "huref/data/latent_panel-v1.json" in out and "latent_panel.json" not in out
    code, out, _ = huref_cli("verify", "demo:independent", "--base", str(legacy), "--json")
    assert code == 1 and not json.loads(out)["derives"]
    code, out, err = huref_cli("compare", str(legacy), str(published["offspring"]["fp"]))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "encoder version 1" in err and "version 2" in err and "cannot be compared" in err


def test_fingerprint_refuses_layers_it_would_not_read(tmp_path, huref_cli):
    """The dog reads every layer: --layers, which compare and invariants take, is refused in one line
    rather than silently passed over."""
    code, out, err = huref_cli("fingerprint", "demo:base", "--layers", "1,2", "-o", str(tmp_path / "d.png"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "every layer" in err
    assert not (tmp_path / "d.png").exists()
