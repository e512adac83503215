"""Edge variants of a bundle's model, each shipped only when its own gate passes.

MLP bundles get an int8 dynamic-quantised variant, LightGBM bundles a float32 compact one.
Each keeps the full model's serving contract (input 'features' double [n, f], output 'score'
of the same shape), is measured against the full model on the holdout (size, latency, score
difference, main metric) and judged by `EdgeRules`. A rejected variant is not shipped; it
never blocks the full model. Pure core: no Dagster, no MLflow.

    variants = build_edge_variants(bundle, X_holdout, y_holdout, main_metric="roc_auc", threshold=0.5)
    decisions = [evaluate_edge_variant(v, DEFAULT_EDGE_RULES[v.name]) for v in variants]
    save_variants(variants, decisions, bundle_dir)          # edge/<name>.onnx + edge/<name>.json
    report_md = edge_summary_markdown(variants, decisions)
"""

from mlops_assets.core.edge.convert import EdgeBuildError, graph_to_float32, split_gemm
from mlops_assets.core.edge.report import edge_summary, edge_summary_markdown
from mlops_assets.core.edge.rules import (
    DEFAULT_EDGE_RULES,
    EdgeDecision,
    EdgeRules,
    evaluate_edge_variant,
)
from mlops_assets.core.edge.storage import (
    EDGE_DIR,
    EdgeVariantError,
    EdgeVariantInfo,
    load_variants,
    save_variants,
)
from mlops_assets.core.edge.variants import (
    DEFAULT_VARIANTS,
    VARIANTS_BY_TRAINER,
    EdgeVariant,
    build_edge_variants,
    check_contract,
)

__all__ = [
    "DEFAULT_EDGE_RULES",
    "DEFAULT_VARIANTS",
    "EDGE_DIR",
    "VARIANTS_BY_TRAINER",
    "EdgeBuildError",
    "EdgeDecision",
    "EdgeRules",
    "EdgeVariant",
    "EdgeVariantError",
    "EdgeVariantInfo",
    "build_edge_variants",
    "check_contract",
    "edge_summary",
    "edge_summary_markdown",
    "evaluate_edge_variant",
    "graph_to_float32",
    "load_variants",
    "save_variants",
    "split_gemm",
]
