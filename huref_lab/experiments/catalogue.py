"""The tiny zoo: which models it holds (bases, offspring, lineage derivations), building the ones not yet
cached, and their whole-depth invariant terms. Everything lives under a cache root (`paths.experiments_cache`).
"""

from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import torch

from huref.invariants import invariant_terms, save_terms
from huref.sources import load_model
from huref_lab.experiments import minilm, zoo

SIZE = dict(hidden=128, layers=4, heads=4, kv_heads=2, ffn=352, context=128)
SCALES = {
    "full": dict(vocab=2048, size=SIZE, base_steps=700, child_steps=200, batch=12, lr=3e-3, child_lr=1e-3,
                 lora_lr=2e-3, new_tokens=256, minilm_steps=80, minilm_batch=8, minilm_lr=1e-4, n_tokens=4096),
    "smoke": dict(vocab=512, size=dict(SIZE, hidden=64, ffn=128, context=64), base_steps=30, child_steps=10,
                  batch=8, lr=3e-3, child_lr=1e-3, lora_lr=2e-3, new_tokens=32, minilm_steps=2, minilm_batch=2,
                  minilm_lr=1e-4, n_tokens=512),
}
BASES = (("llama-A", "llama", 1), ("llama-B", "llama", 2), ("llama-C", "llama", 3), ("neox-D", "gpt_neox", 4))
TRAINED_KINDS = ("sft", "cpt+vocab", "lora")
EDITED_KINDS = ("int8", "prune20")


def zoo_entries(root: Path) -> list[dict]:
    """Every model of the zoo: name, family (its base), kind, dir, parent dir (None for bases)."""
    entries = []
    for name, model_type, seed in BASES:
        entries.append(dict(name=name, family=name, kind="base", model_type=model_type, seed=seed,
                            dir=root / name, parent=None))
        if model_type != "llama":
            continue
        for kind in TRAINED_KINDS + EDITED_KINDS + ("attacked",):
            entries.append(dict(name=f"{name}/{kind}", family=name, kind=kind, seed=seed + 100,
                                dir=root / f"{name}.{kind}", parent=root / name))
    entries += [dict(name="MiniLM", family="MiniLM", kind="pretrained", dir=minilm.pretrained_dir(), parent=None),
                dict(name="MiniLM/mlm-ft", family="MiniLM", kind="mlm fine-tune", seed=7,
                     dir=root / "MiniLM.mlm-ft", parent=minilm.pretrained_dir()),
                dict(name="MiniLM-reinit", family="MiniLM-reinit", kind="re-initialised", seed=8,
                     dir=root / "MiniLM-reinit", parent=None)]
    return entries


def lineage_entries(root: Path, scale: dict) -> list[dict]:
    """The derivations and hard negatives of the lineage evidence, all around llama-A (seed 1).

    llama-A-twin: llama-A's tokenizer and data, another seed (a hard negative); llama-A-sib: the same,
    another size (hidden 96, 6 layers, FFN 256; a sibling); offspring of llama-A: cpt-heavy (twice the
    base's steps at its learning rate on vim's help, with 256 new vim tokens), depth-pruned (layer 2
    dropped, healed), upscaled (layers 1-2 duplicated SOLAR-style: 0 1 2 1 2 3, trained), a
    frankenmerge of llama-A's layers 0-1 with llama-A-twin's layers 2-3 (healed), width-pruned
    (Minitron-style to 3/4 of the hidden and FFN width, one query head per KV group, healed by
    distillation), moe-upcycled (every FFN copied into 4 mixtral experts, top-2, random router,
    trained), ft-python (a fine-tune on Python) and the linear, SLERP and TIES merges of it with
    llama-A/sft. llama-A-student: llama-A's config and tokenizer, randomly initialised and trained
    from scratch on llama-A's logits only (an independent model by its weights).
    An entry with "builder" names the function of `zoo` that builds it from its spec plus
    entry["params"]; "after": the model directories it needs first."""
    a, twin = root / "llama-A", root / "llama-A-twin"
    heal, steps = scale["child_steps"] // 2, scale["child_steps"]
    sib_size = dict(scale["size"], hidden=scale["size"]["hidden"] * 3 // 4, layers=6, ffn=scale["size"]["ffn"] * 3 // 4)

    def derived(kind, plan, steps, lr, corpus, vocab=0):
        return dict(name=f"llama-A/{kind}", family="llama-A", kind=kind, seed=101,
                    dir=root / f"llama-A.{kind}", parent=a, after=sorted({str(d) for d, _ in plan}),
                    plan=[[str(d), i] for d, i in plan], steps=steps, lr=lr, corpus=corpus, vocab=vocab)

    sft, python_ft = root / "llama-A.sft", root / "llama-A.ft-python"

    def built(kind, builder, seed=101, after=(), corpus="python", **params):
        return dict(name=f"llama-A/{kind}", family="llama-A", kind=kind, seed=seed, dir=root / f"llama-A.{kind}",
                    parent=a, after=[str(d) for d in after] or [str(a)], builder=builder, params=params,
                    corpus=corpus)

    return [
        dict(name="llama-A-twin", family="llama-A-twin", kind="base", model_type="llama", seed=11, data_seed=1,
             dir=twin, parent=None),
        dict(name="llama-A-sib", family="llama-A-sib", kind="base", model_type="llama", seed=12, data_seed=1,
             size=sib_size, dir=root / "llama-A-sib", parent=None),
        derived("cpt-heavy", [(a, i) for i in range(4)], 2 * scale["base_steps"], scale["lr"], "vim",
                vocab=scale["new_tokens"]),
        derived("depth-pruned", [(a, 0), (a, 1), (a, 3)], heal, scale["child_lr"], "python"),
        derived("upscaled", [(a, 0), (a, 1), (a, 2), (a, 1), (a, 2), (a, 3)], steps, scale["child_lr"], "python"),
        dict(derived("frankenmerge", [(a, 0), (a, 1), (twin, 2), (twin, 3)], heal, scale["child_lr"], "python"),
             also_from="llama-A-twin"),
        dict(name="llama-A-student", family="llama-A-student", kind="distilled", seed=21, dir=root / "llama-A-student",
             parent=a, builder="distilled_student", corpus="python",
             params=dict(steps=scale["base_steps"] * 3 // 7, lr=scale["lr"])),
        built("width-pruned", "width_pruned_offspring", hidden=scale["size"]["hidden"] * 3 // 4,
              ffn=scale["size"]["ffn"] * 3 // 4, steps=heal, lr=scale["child_lr"]),
        built("moe-upcycled", "upcycled_offspring", experts=4, top_k=2, steps=heal, lr=scale["child_lr"]),
        built("ft-python", "train_offspring", seed=102),
        *[built(f"merge-{method}", "merged_offspring", after=[sft, python_ft], corpus="–", merge=method,
                models=[str(sft), str(python_ft)]) for method in ("linear", "slerp", "ties")],
    ]


def rotated_entries(root: Path) -> list[dict]:
    """The rotation-only attacked copy of each llama base (for the FFN-form comparison)."""
    return [dict(name=f"{name}/rotated", family=name, kind="rotated", seed=seed + 200, dir=root / f"{name}.rotated",
                 parent=root / name) for name, model_type, seed in BASES if model_type == "llama"]


def job(entry: dict, scale: dict):
    """(function, spec) that builds `entry`."""
    spec = dict(name=entry["name"], out=str(entry["dir"]), seed=entry.get("seed", 0), scale=scale,
                parent=str(entry["parent"]) if entry["parent"] else None, kind=entry["kind"])
    if "builder" in entry:
        return getattr(zoo, entry["builder"]), dict(spec, **entry["params"])
    if entry["kind"] == "base":
        return zoo.train_base, dict(spec, model_type=entry["model_type"], data_seed=entry.get("data_seed"),
                                    size=entry.get("size"))
    if "plan" in entry:
        return zoo.structure_offspring, dict(spec, **{k: entry[k] for k in ("plan", "steps", "lr", "corpus", "vocab")},
                                             embeddings_from=str(entry["parent"]))
    if entry["kind"] in TRAINED_KINDS:
        return zoo.train_offspring, spec
    if entry["kind"] in EDITED_KINDS:
        return zoo.edit_offspring, spec
    if entry["kind"] == "attacked":
        return zoo.attacked_offspring, dict(spec, attacks=zoo.llama_attacks())
    if entry["kind"] == "rotated":
        return zoo.attacked_offspring, dict(spec, attacks="rotation")
    if entry["kind"] == "mlm fine-tune":
        return minilm.finetune, spec
    if entry["kind"] == "re-initialised":
        return minilm.reinitialised, spec
    return None


def build(entries: list[dict], scale: dict, workers: int, log) -> None:
    """Build every entry not yet cached, `workers` processes at a time, each as soon as its parent exists."""
    finished, pending, running = set(), list(entries), {}
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        while pending or running:
            for entry in [e for e in pending if e["parent"] is None or e["kind"] == "mlm fine-tune"
                          or all(d in finished for d in e.get("after", [str(e["parent"])]))]:
                pending.remove(entry)
                fn_and_spec = job(entry, scale)
                if fn_and_spec is None:
                    finished.add(str(entry["dir"]))
                else:
                    running[pool.submit(*fn_and_spec)] = entry
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                entry = running.pop(future)
                future.result()
                finished.add(str(entry["dir"]))
                log(f"built {entry['name']}")


def compute_terms(spec: dict) -> str:
    """Invariant terms of every layer of the model in spec["dir"], cached at spec["path"]."""
    torch.set_num_threads(1)
    path = Path(spec["path"])
    stamp = Path(spec["dir"]) / "model.safetensors"
    if not path.exists() or path.stat().st_mtime < stamp.stat().st_mtime:
        model = load_model(spec["dir"])
        save_terms(invariant_terms(model, layers=list(range(model.dims.n_layers)), n_tokens=spec["n_tokens"]), path)
    return spec["name"]


def terms_path(root: Path, entry: dict) -> Path:
    return root / "terms" / (entry["name"].replace("/", ".") + ".safetensors")


def all_terms(entries, root: Path, scale: dict, workers: int, log) -> None:
    (root / "terms").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        specs = [dict(name=e["name"], dir=str(e["dir"]), path=str(terms_path(root, e)), n_tokens=scale["n_tokens"])
                 for e in entries]
        for name in pool.map(compute_terms, specs):
            log(f"terms of {name}")



def related(a: dict, b: dict) -> bool:
    return a["family"] == b["family"]


def ffn_form_pairs(entries) -> list[tuple[dict, dict, str]]:
    """(base, relative, relation) for each llama base of the zoo (BASES: the bases with rotated and attacked
    copies; the lineage bases llama-A-twin and llama-A-sib have neither) and its rotated copy, its attacked
    copy, its SFT offspring and the next llama base. `entries` must hold those copies (`rotated_entries`)."""
    by_name = {e["name"]: e for e in entries}
    bases = [name for name, model_type, _ in BASES if model_type == "llama"]
    return [(by_name[base], by_name[relative], relation)
            for base, other in zip(bases, bases[1:] + bases[:1])
            for relative, relation in ((f"{base}/rotated", "rotation attack"), (f"{base}/attacked", "all attacks"),
                                       (f"{base}/sft", "SFT offspring"), (other, "independent base"))]
