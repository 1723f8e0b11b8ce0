"""Loading generators: NVIDIA-format pickles (crafted here, in the layout torch_utils.persistence writes),
refusal of anything else a pickle asks for, huref's safetensors + JSON format, and huref's choice of
generator (huref.generators: the bundled one, the cached AFHQ-dog, a file)."""

import builtins
import hashlib
import json
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import huref.files
import stylegan2
from huref.errors import HurefError, InstallationError
from huref.generators import (FALLBACK_NOTICE, bundled_generator, convert_generator, load_generator,
                              resolve_generator, save_generator)
from stylegan2 import GeneratorError
from stylegan2.networks import Generator

KWARGS = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=8, img_channels=3,
              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=64, channel_max=8, num_fp16_res=4,
                                                                       conv_clamp=256))


def random_generator(seed=0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**KWARGS).eval()
    with torch.no_grad():
        for t in G.state_dict().values():
            t.copy_(torch.randn_like(t))
    return G


@pytest.fixture
def nvidia_modules(monkeypatch):
    """Stand-ins for NVIDIA's torch_utils.persistence and dnnlib.util, so that pickle can write the same
    globals their pickles contain. The loader must never import or call them."""
    calls = []

    def _reconstruct_persistent_obj(meta):
        calls.append(meta)
        raise AssertionError("the loader called the pickle's reconstruct function")

    class EasyDict(dict):
        pass

    persistence = types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")
    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, "EasyDict"
    util.EasyDict = EasyDict
    for name, module in [("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                         ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict, calls=calls)


class Reduce:
    """Pickles as a call of fn(*args), the way persistent objects and attacks alike are written."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def persistent_record(module, nv, module_src, init_kwargs=None):
    """A persistence record as NVIDIA writes it: meta with module source, class name and the module's state."""
    state = {
        "training": False,
        "_parameters": OrderedDict(module._parameters),
        "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_forward_hooks": OrderedDict(),
        "_modules": OrderedDict((n, persistent_record(c, nv, module_src)) for n, c in module._modules.items()),
        "_init_args": (),
        "_init_kwargs": nv.EasyDict(init_kwargs or {}),
        "weight_gain": np.float64(0.125),  # NVIDIA stores numpy scalars as attributes
    }
    meta = dict(type="class", version=6, module_src=module_src, class_name=type(module).__name__, state=state)
    return Reduce(nv.reconstruct, meta)


def write_nvidia_pickle(path, G, nv, marker, extra=None):
    """Write {"G", "D", "G_ema", ...} like NVIDIA's training loop (protocol 3, as their Python 3.7 did)."""
    source = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module source was executed')\n"
    kwargs = {**KWARGS, "mapping_kwargs": nv.EasyDict(KWARGS["mapping_kwargs"]),
              "synthesis_kwargs": nv.EasyDict(KWARGS["synthesis_kwargs"])}
    record = persistent_record(G, nv, source, kwargs)
    data = {"G": record, "D": None, "G_ema": record, "augment_pipe": None,
            "training_set_kwargs": dict(path="afhqdog.zip", resolution=8), **(extra or {})}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=3)


def test_nvidia_pickle_rebuilds_the_same_tensors_without_running_anything(tmp_path, nvidia_modules):
    G = random_generator()
    marker = tmp_path / "ran"
    write_nvidia_pickle(tmp_path / "net.pkl", G, nvidia_modules, marker)
    loaded, info = stylegan2.load_network(tmp_path / "net.pkl")
    assert not marker.exists() and nvidia_modules.calls == []
    assert info["init_kwargs"]["synthesis_kwargs"] == KWARGS["synthesis_kwargs"]
    want, got = G.state_dict(), loaded.state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    z = torch.randn(2, 16)
    assert torch.equal(loaded(z, truncation_psi=0.5), G(z, truncation_psi=0.5))


def test_convert_writes_our_format_with_the_pickle_hash(tmp_path, nvidia_modules, huref_cli):
    G = random_generator(1)
    write_nvidia_pickle(tmp_path / "net.pkl", G, nvidia_modules, tmp_path / "ran")
    out = convert_generator(tmp_path / "net.pkl", tmp_path / "net.safetensors")
    config = json.loads((tmp_path / "net.json").read_text())
    assert config["info"]["source_sha256"] == hashlib.sha256((tmp_path / "net.pkl").read_bytes()).hexdigest()
    loaded, _ = stylegan2.load_network(out)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in G.state_dict().items())
    # the command writes the same files with -o, as every command writes its output, and says so
    code, out_text, err = huref_cli("generator", "convert", str(tmp_path / "net.pkl"), "-o",
                                    str(tmp_path / "cli.safetensors"))
    assert code == 0 and out_text == "" and f"wrote {tmp_path / 'cli.safetensors'} and {tmp_path / 'cli.json'}" in err
    assert (tmp_path / "cli.safetensors").read_bytes() == out.read_bytes()
    for args, why in ((["-o", str(tmp_path / "nodir" / "g.safetensors")], "no such folder"),
                      (["-o", str(tmp_path / "g.pt")], ".safetensors"),
                      ([str(tmp_path / "g.safetensors")], "-o/--output")):
        code, _, err = huref_cli("generator", "convert", str(tmp_path / "net.pkl"), *args)
        assert code == 2 and why in err and err.count("\n") == 1, err
    assert not (tmp_path / "ran").exists() and not (tmp_path / "g.safetensors").exists()


ATTACKS = {
    "os.system": lambda marker: Reduce(os.system, f"touch {marker}"),
    "builtins.exec": lambda marker: Reduce(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
    "subprocess.call": lambda marker: Reduce(subprocess.call, ["touch", str(marker)]),
    "torch.load": lambda marker: Reduce(torch.load, str(marker)),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_pickle_calling_any_other_global_is_refused_and_nothing_runs(tmp_path, attack):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": ATTACKS[attack](marker)}, protocol=3))
    with pytest.raises(GeneratorError, match="refused to load.*nothing from the file was run") as err:
        stylegan2.load_network(tmp_path / "evil.pkl")
    assert len(str(err.value).splitlines()) == 1
    assert not marker.exists()


def test_attack_hidden_inside_a_valid_record_is_refused(tmp_path, nvidia_modules):
    marker = tmp_path / "pwned"
    write_nvidia_pickle(tmp_path / "net.pkl", random_generator(), nvidia_modules, tmp_path / "ran",
                        extra={"augment_pipe": Reduce(os.system, f"touch {marker}")})
    with pytest.raises(GeneratorError, match=r"(posix|os)\.system"):
        stylegan2.load_network(tmp_path / "net.pkl")
    assert not marker.exists()


def test_our_format_round_trip(tmp_path):
    G = random_generator(2)
    save_generator(G, tmp_path / "g.safetensors", extra={"images_seen": 7})
    loaded, config = stylegan2.load_generator(tmp_path / "g.safetensors")
    assert config["info"]["images_seen"] == 7 and config["init_kwargs"] == G.init_kwargs
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in G.state_dict().items())
    z = torch.randn(3, 16)
    assert torch.equal(loaded(z), G(z))


def test_our_format_errors_are_one_line(tmp_path):
    G = random_generator()
    save_generator(G, tmp_path / "g.safetensors")
    config = json.loads((tmp_path / "g.json").read_text())
    config["init_kwargs"]["synthesis_kwargs"]["channel_max"] = 16  # tensors no longer fit
    (tmp_path / "g.json").write_text(json.dumps(config))
    with pytest.raises(GeneratorError, match="shape"):
        stylegan2.load_network(tmp_path / "g.safetensors")
    (tmp_path / "g.json").unlink()
    with pytest.raises(GeneratorError, match="missing its config"):
        stylegan2.load_network(tmp_path / "g.safetensors")
    with pytest.raises(HurefError, match="missing its config") as err:  # huref says the same, as its own error
        load_generator(str(tmp_path / "g.safetensors"))
    assert len(str(err.value).splitlines()) == 1


def test_bundled_generator_loads_and_draws():
    G, info = stylegan2.load_network(bundled_generator())
    assert info["images_seen"] > 0
    img = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)))
    assert img.shape == (2, 3, G.img_resolution, G.img_resolution)
    assert img.abs().max() < 3 and img.std() > 0.1


def test_default_generator_prefers_cached_afhqdog_then_falls_back_with_a_notice(tmp_path, monkeypatch, capsys,
                                                                                  nvidia_modules):
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path / "cache"))
    G, info, notice = load_generator()
    assert info["name"] == "bundled" and notice == FALLBACK_NOTICE and "huref generator download afhqdog" in notice
    assert info["sha256"] == hashlib.sha256(bundled_generator().read_bytes()).hexdigest()
    cached = tmp_path / "cache" / "stylegan2" / "afhqdog.pkl"
    cached.parent.mkdir(parents=True)
    write_nvidia_pickle(cached, random_generator(), nvidia_modules, tmp_path / "ran")
    G, info, notice = load_generator()
    assert info["name"] == "afhqdog" and G.img_resolution == 8 and notice is None
    assert resolve_generator("bundled") == ("bundled", bundled_generator(), None)  # asked for: no notice
    G, info, notice = load_generator(str(bundled_generator()))
    assert info["name"] == bundled_generator().name and notice is None
    assert capsys.readouterr().err == ""  # nothing printed, ever


def test_a_missing_bundled_generator_is_an_installation_fault(tmp_path, monkeypatch):
    monkeypatch.setenv("HUREF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(huref.files, "data_dir", lambda: tmp_path)
    for choice in (None, "bundled"):
        with pytest.raises(InstallationError, match="generator.json is missing"):
            resolve_generator(choice)
    with pytest.raises(HurefError, match="AFHQ-dog generator is not downloaded"):  # the user's choice
        resolve_generator("afhqdog")


def test_stylegan2_stands_alone():
    """stylegan2 imports nothing from huref and prints nothing (a fresh interpreter, no huref importable)."""
    code = ("import sys; sys.modules['huref'] = None; import stylegan2, stylegan2.discriminator; "
            "print(sorted(m for m in sys.modules if m.startswith('huref')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['huref']" and done.stderr == ""
    package = Path(stylegan2.__file__).parent
    assert not [p.name for p in package.glob("*.py") if "print(" in p.read_text() or "sys.stderr" in p.read_text()]
