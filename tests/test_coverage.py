"""The coverage table: every causal-LM model type of the pinned transformers has one status, every supported one
a tiny model (so the attack suite covers it), and docs/ARCHITECTURES.md is what scripts/coverage.py generates.
A newer upstream release is drift, reported by `scripts/coverage.py --latest`, never a failure here."""

import copy
import re
from importlib.metadata import version
from pathlib import Path

import pytest

from huref.architectures import arch_for_config, supported_model_types
from huref.errors import HurefError
from huref_lab import coverage

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURES.md"


def test_every_causal_lm_model_type_has_a_status():
    missing = [t for t, status, _ in coverage.statuses() if status == "missing"]
    assert not missing, f"give these a row in huref/architectures.py or a reason in huref_lab/coverage.py: {missing}"


def test_every_supported_model_type_has_a_tiny_model():
    untested = [t for t in supported_model_types() if not coverage.tiny_models_of(t)]
    assert not untested, f"add a tiny model to huref_lab/tiny_models.CONFIGS for: {untested}"


def test_reasons_are_given_only_for_known_unsupported_types():
    reasons = {**coverage.NOT_APPLICABLE, **coverage.NOT_YET}
    assert not set(coverage.NOT_APPLICABLE) & set(coverage.NOT_YET)
    supported = set(supported_model_types()) | set(coverage.supported_wrappers())
    assert not set(reasons) & supported, "a supported model type still has a reason"
    assert set(reasons) <= set(coverage.causal_lm_types()), "a reason for a model type transformers does not list"
    assert all(reason.strip() for reason in reasons.values())


def test_every_model_type_without_support_is_refused_in_one_line():
    for model_type in sorted({**coverage.NOT_APPLICABLE, **coverage.NOT_YET}):
        with pytest.raises(HurefError) as refused:
            arch_for_config({"model_type": model_type})
        assert str(refused.value).startswith(f"unsupported model_type '{model_type}'; supported: ")
        assert "\n" not in str(refused.value)


def test_the_table_is_generated_and_current():
    assert DOC.read_text() == coverage.render(), "docs/ARCHITECTURES.md is stale: run python scripts/coverage.py"


def test_the_readme_gives_the_generated_count():
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert coverage.summary() in readme, f"README's Supported architectures should say: {coverage.summary()}"


def pins() -> dict[str, str]:
    """name -> version of constraints.txt."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups() for line in lines if line and line[0] != "#")


def test_the_snapshot_is_of_the_pinned_versions():
    pinned = coverage.pinned()
    assert pinned["transformers"]["version"] == pins()["transformers"]
    assert pinned["gguf"]["version"] == pins()["gguf"]


def test_the_snapshot_is_what_the_pinned_release_lists():
    if version("transformers") != coverage.pinned()["transformers"]["version"]:
        pytest.skip(f"transformers {version('transformers')} is installed, not the pinned "
                    f"{coverage.pinned()['transformers']['version']}: drift, reported by scripts/coverage.py --latest")
    now = coverage.installed_snapshot()["transformers"]["causal_lm_types"]
    assert now == coverage.causal_lm_types()


def test_a_new_upstream_model_type_is_drift_not_a_failure():
    newer = copy.deepcopy(coverage.pinned())
    newer["transformers"]["version"] = "99.0.0"
    newer["transformers"]["causal_lm_types"] += ["brand_new_lm"]
    newer["transformers"]["causal_lm_types"].remove("llama")
    newer["gguf"]["architectures"] += ["brand-new-arch"]
    newer["gguf"]["quantization_types"] += ["Q0_Z"]
    found = coverage.drift(newer)
    assert found["transformers"] == {"pinned": coverage.pinned()["transformers"]["version"], "installed": "99.0.0",
                                     "unclassified": ["brand_new_lm"], "removed": ["llama"]}
    assert found["gguf"]["new_architectures"] == ["brand-new-arch"]
    assert found["gguf"]["new_quantization_types"] == ["Q0_Z"]
    assert not found["gguf"]["removed_architectures"]
    # the table itself classifies the pinned types only, so it is unchanged by what is installed
    assert "brand_new_lm" not in {t for t, _, _ in coverage.statuses()}
    assert not coverage.drift(coverage.pinned())["transformers"]["unclassified"]


def test_the_readme_names_the_pinned_versions():
    readme = " ".join((ROOT / "README.md").read_text().split())
    for name in ("torch", "transformers", "gguf"):
        assert f"{name} {pins()[name]}" in readme, f"README should name the pinned {name} {pins()[name]}"
