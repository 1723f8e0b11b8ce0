"""The registry of models: Parquet parts (`format`), entries built from models (`entries`),
`identify`, `audit`, `calibrate`, the Hub path (`hub`) and the click commands (`commands`)."""
