"""One module per lifecycle stage: thin Dagster assets over the pure core."""
