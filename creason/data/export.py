"""Write the raw synthetic registry (identifiers and absolute dates included) to a file, as a
user's own registry would look: the input format of `data.source: files`."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from creason.config import CreasonConfig
from creason.data.pipeline import load_registry_dictionary
from creason.data.synthetic import generate_block


def write_synthetic_registry(cfg: CreasonConfig, path: Path) -> Path:
    """Generate `data.num_patients` patients block by block into `path` (.csv or .parquet), atomically."""
    dictionary = load_registry_dictionary(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer = None
    try:
        for block, first in enumerate(range(0, cfg.data.num_patients, cfg.data.block_size)):
            n = min(cfg.data.block_size, cfg.data.num_patients - first)
            table = generate_block(dictionary, n, cfg.seed, block, first)
            if writer is None:
                writer = (pq.ParquetWriter if path.suffix == ".parquet" else pcsv.CSVWriter)(tmp, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    return path


def synthetic_record(cfg: CreasonConfig, patient_number: int = 9_000_000) -> dict:
    """One new synthetic patient as a client would send it to `/v1/registry/predict`: values by
    variable name in JSON types (ISO 8601 strings for datetimes), identifiers included, as a user's
    registry row would hold them. Patient numbers of 9,000,000 up are never built into questions by
    the shipped configs."""
    table = generate_block(load_registry_dictionary(cfg), 1, cfg.seed + 1, patient_number, patient_number)
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in table.to_pylist()[0].items()}
