"""`mlops-assets init DATA_FILE --target COL`: a starting spec inferred from a sample.

Reads up to `--sample-rows` rows of a CSV or Parquet file, infers the spec with the pure
`mlops_assets.schema_inference`, writes it as commented YAML, and checks that it loads with
`PipelineSpec.from_yaml`. The data file's folder is the landing folder unless `--landing`
says otherwise, so the file itself is the pipeline's first arrival.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def read_sample(path: Path, rows: int):
    """The first `rows` rows, read as raw_data reads an arrival (a CSV by the same reader, so
    what it refuses is refused here too, naming the line); a ValueError names the file."""
    import polars as pl

    from mlops_assets.sources.csv_read import read_csv_bytes

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return read_csv_bytes(_head(path, rows), n_rows=rows), "csv"
        if suffix in (".parquet", ".pq"):
            return pl.scan_parquet(path).head(rows).collect(), "parquet"
    except (pl.exceptions.PolarsError, OSError) as exc:   # a corrupt Parquet file
        raise ValueError(f"{path.name} is unreadable as {suffix.lstrip('.')}: {str(exc).splitlines()[0][:300]}") from exc
    except ValueError as exc:
        raise ValueError(f"{path.name} is unreadable as csv: {exc}") from exc
    raise ValueError(f"{path.name}: expected a .csv, .parquet or .pq file")


def _head(path: Path, rows: int, chunk: int = 1 << 20) -> bytes:
    """The file's first lines, enough for `rows` rows (twice over, for quoted line breaks): a
    sample of a large file is not read whole."""
    data, lines = bytearray(), 0
    with open(path, "rb") as fh:
        while lines <= 2 * rows + 1 and (block := fh.read(chunk)):
            data += block
            lines += block.count(b"\n")
        if fh.read(1) and b"\n" in data:
            del data[data.rfind(b"\n") + 1:]      # a partial last line would read as a short row
    return bytes(data)


def cmd_init(args) -> int:
    from mlops_assets.schema_inference import (
        InferenceError,
        InferenceOptions,
        identifier,
        infer_spec,
    )
    from mlops_assets.spec import PipelineSpec, SpecError

    data_file = Path(args.data_file).expanduser().resolve()
    if not data_file.is_file():
        print(f"mlops-assets init: {data_file} is not a file")
        return 2
    # loans_2026-01-01.csv -> loans: a date in a file name names the arrival, not the pipeline
    stem = re.sub(r"[_\-.]*\d{4}-?\d{2}-?\d{2}.*$", "", data_file.stem) or data_file.stem
    name = args.name or identifier(stem)
    output = Path(args.output or f"{name}.yaml").expanduser().resolve()
    if output.exists() and not args.force:
        print(f"mlops-assets init: {output} exists (pass --force to overwrite it)")
        return 2
    landing = Path(args.landing).expanduser().resolve() if args.landing else data_file.parent
    try:
        frame, fmt = read_sample(data_file, args.sample_rows)
        inferred = infer_spec(
            frame, target=args.target, name=name, source_format=fmt,
            source_path=os.path.relpath(landing, output.parent), id_column=args.id_column,
            timestamp_column=args.timestamp_column, sample_name=data_file.name,
            options=InferenceOptions(margin=args.margin, max_categories=args.max_categories),
        )
    except (InferenceError, ValueError, OSError) as exc:
        print(f"mlops-assets init: {exc}")
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(inferred.to_yaml())
    try:
        spec = PipelineSpec.from_yaml(tmp)
    except SpecError as exc:       # a bug here, not the user's: say so, keep the draft to look at
        print(f"mlops-assets init: the inferred spec does not load ({exc}); draft kept at {tmp}")
        return 1
    tmp.replace(output)
    features = inferred.features
    kinds = {k: sum(f.feature["type"] == k for f in features) for k in ("numeric", "categorical")}
    print(f"wrote {output}: pipeline {spec.name!r}, task {spec.task}, target {spec.target!r}, "
          f"id {spec.id_column!r}, timestamp {spec.timestamp_column!r}")
    print(f"  {len(features)} features ({kinds['numeric']} numeric, {kinds['categorical']} categorical) from "
          f"{inferred.rows:,} rows; {len(inferred.columns) - len(features) - 2 - bool(spec.timestamp_column)} "
          f"column(s) not used; {inferred.review_count()} REVIEW note(s) in the file")
    in_landing = data_file.parent == landing
    print(f"  files arrive in {landing}" + (f" ({data_file.name} is the first)" if in_landing else ""))
    rel = os.path.relpath(output)
    print("next: review the file, then")
    if not in_landing:
        print(f"  mlops-assets ingest {rel} {data_file}      # or copy files into {landing}")
    print(f"  mlops-assets run {rel}          # sensors and schedules once, until quiet")
    print(f"  mlops-assets status {rel}")
    return 0
