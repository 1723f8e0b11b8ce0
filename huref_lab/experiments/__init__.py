"""The experiments behind docs/RESULTS.md and docs/REAL_MODELS.md; scripts/ holds their entry points.

The tiny zoo: `catalogue` (which models, building them, their terms), `zoo` (the builders), `train_lm`
(the tiny language models' training), `corpora` (vim help and Python sources, split by file), `minilm`
(the BERT members). Measuring it: `zoo_similarity` (ICS tables from cached terms), `paper_ffn` (the
paper's FFN form), `calibration` (thresholds), `separation` (AUC, held-out verdicts), `gallery` (dogs),
`report` (docs/RESULTS.md), `evidence` (the whole run), `lineage_evidence` (the lineage section and
null panel). Real weights: `real_models` (fetch, export, fine-tune, quantize, measure) and `real_lineage`.
Caches and the repository: `paths`.
"""
