"""Benchmarks of huref on synthetic checkpoints shaped like real models (`build`), timed beside the
floors measured in the same run (`measure`), bfloat16's effect on verdicts (`accuracy`), and
docs/PERFORMANCE.md generated from the results alone (`report`). Run as `python -m huref_lab.bench`.
"""
