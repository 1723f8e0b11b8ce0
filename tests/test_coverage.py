"""The coverage table: every causal-LM model type of transformers has one status, every supported one a tiny
model (so the attack suite covers it), and docs/ARCHITECTURES.md is what scripts/coverage.py generates."""

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
