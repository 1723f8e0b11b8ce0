"""Cases on the command line and the run itself: flags, outputs, partial outputs, valid inputs
that must work, interrupts and concurrent runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from huref_lab.hostile.cases.base import TOKENS, Case, case
from huref_lab.hostile.forgers import copy_model


def flags_case(name, argv_of, expect=2, klass="flags"):
    @case(name, klass)
    def build(kit, directory):
        argv, absent = argv_of(kit, directory)
        return Case(argv, expect, absent)


flags_case("verify_min_ics_nan", lambda k, d: (["verify", str(k.llama), "--base", str(k.fingerprint),
                                                 "--min-ics", "nan", *TOKENS], []))
flags_case("verify_min_latent_infinity", lambda k, d: (["verify", str(k.llama), "--base", str(k.fingerprint),
                                                        "--min-latent", "inf", *TOKENS], []))


@case("tokens_over_the_memory_budget", "declared sizes")
def _(kit, directory):
    out = directory / "o.safetensors"
    return Case(["invariants", str(kit.llama), "-o", str(out), "--tokens", "40000", "-q"], 2, [str(out)],
                {"HUREF_MEMORY_GB": "0.001"})


flags_case("tokens_negative", lambda k, d: (["invariants", str(k.llama), "-o", str(d / "o.safetensors"),
                                             "--tokens", "-5", "-q"], [str(d / "o.safetensors")]))
flags_case("layers_not_numbers", lambda k, d: (["invariants", str(k.llama), "-o", str(d / "o.safetensors"),
                                                "--layers", "a,b", *TOKENS], [str(d / "o.safetensors")]))
flags_case("layers_out_of_range", lambda k, d: (["invariants", str(k.llama), "-o", str(d / "o.safetensors"),
                                                 "--layers", "99999999999999999999", *TOKENS],
                                                [str(d / "o.safetensors")]))
flags_case("truncation_nan", lambda k, d: (["show", str(k.fingerprint), "-o", str(d / "o.png"), "--truncation",
                                            "nan", "-q"], [str(d / "o.png")]))
@case("hub_offline", "flags")
def _(kit, directory):
    out = directory / "o.safetensors"
    return Case(["invariants", "nobody-here/no-model", "-o", str(out), "-q"], 2, [str(out)], {"HF_HUB_OFFLINE": "1"})
flags_case("registry_not_a_folder", lambda k, d: (["verify", str(k.llama), "--registry", str(k.fingerprint)], []))
flags_case("message_of_2_mb", lambda k, d: (["invariants", "x" * 2_000_000, "-o", str(d / "o.safetensors")],
                                            [str(d / "o.safetensors")]))


@case("output_is_the_model_file", "outputs")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    return Case(["invariants", str(model), "-o", str(model / "model.safetensors"), *TOKENS])


@case("output_png_over_config", "outputs")
def _(kit, directory):
    model = copy_model(kit.llama, directory)
    (model / "config.png").symlink_to(model / "config.json")
    return Case(["fingerprint", str(model), "-o", str(model / "config.png"), *TOKENS])


@case("output_image_over_input_fingerprint", "outputs")
def _(kit, directory):
    fp = Path(shutil.copy(kit.fingerprint, directory / "fp.json"))
    link = directory / "fp.png"
    link.symlink_to(fp)
    return Case(["compare", str(fp), str(kit.fingerprint), "--image", str(link), "-q"])


@case("output_save_fingerprint_equals_output", "outputs")
def _(kit, directory):
    out = directory / "x.json"
    return Case(["fingerprint", str(kit.llama), "-o", str(out) + ".png", "--save-fingerprint", str(out) + ".png",
                 *TOKENS], absent=[str(out) + ".png"])


@case("output_directory_missing", "outputs")
def _(kit, directory):
    out = directory / "missing" / "o.safetensors"
    return Case(["invariants", str(kit.llama), "-o", str(out), *TOKENS])


@case("output_dev_full", "outputs")
def _(kit, directory):
    return Case(["invariants", str(kit.llama), "-o", "/dev/full", *TOKENS])


@case("output_a_directory", "outputs")
def _(kit, directory):
    (directory / "o.png").mkdir()
    return Case(["fingerprint", str(kit.llama), "-o", str(directory / "o.png"), *TOKENS])


@case("output_a_fifo", "outputs")
def _(kit, directory):
    os.mkfifo(directory / "o.safetensors")
    return Case(["invariants", str(kit.llama), "-o", str(directory / "o.safetensors"), *TOKENS])


@case("output_second_fails_first_not_left", "partial outputs")
def _(kit, directory):
    out = directory / "dog.png"
    (directory / "fp.private.safetensors").mkdir()
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--save-fingerprint", str(directory / "fp.json"),
                 *TOKENS], absent=[str(out), str(directory / "fp.json")])


@case("output_fingerprint_into_missing_folder", "partial outputs")
def _(kit, directory):
    out = directory / "dog.png"
    return Case(["fingerprint", str(kit.llama), "-o", str(out), "--save-fingerprint",
                 str(directory / "none" / "fp.json"), *TOKENS], absent=[str(out)])



# --- valid inputs that must work ---

@case("nan_outside_the_probe_rows_compares", "valid inputs")
def _(kit, directory):
    """A NaN in an embedding row that no probe selects: the terms are fine; PCS (a side metric over
    the whole embedding) must not block the comparison."""
    from safetensors.torch import load_file, save_file

    from huref.sources import load_vocab
    from huref.tokens import select_tokens

    model = copy_model(kit.llama, directory)
    tensors = load_file(str(model / "model.safetensors"))
    vocab = load_vocab(model)
    ids, _ = select_tokens(vocab, len(vocab), 64)
    unused = next(i for i in range(len(vocab)) if i not in set(ids))
    tensors["model.embed_tokens.weight"][unused, 0] = float("nan")
    save_file(tensors, str(model / "model.safetensors"))
    return Case(["compare", str(model), str(kit.llama), "--json", *TOKENS], expect=0)



# --- interrupts and concurrent runs ---

INTERRUPT_DELAYS = tuple(0.002 * 1.35 ** k for k in range(24))  # 2 ms to 2 s: a run takes about 0.06 s
for _delay in INTERRUPT_DELAYS:
    @case(f"interrupt_after_{_delay * 1000:.0f}ms", "interrupts")
    def _(kit, directory, delay=_delay):
        out = directory / "o.safetensors"
        return Case(["invariants", str(kit.llama), "-o", str(out), "--tokens", "384", "--layers", "0,1,2",
                     "--precision", "float64", "-q"], 130, [], interrupt_after=delay)


@case("concurrent_runs_same_output", "concurrent runs")
def _(kit, directory):
    out = directory / "o.safetensors"
    return Case(["invariants", str(kit.llama), "-o", str(out), *TOKENS], 0, [], concurrent=4)


