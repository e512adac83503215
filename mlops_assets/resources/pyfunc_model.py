"""The MLflow pyfunc wrapper, so `mlflow models serve -m models:/<name>@champion` works.

It scores raw feature frames through the same ONNX bundle the batch job uses, so what
is served is exactly what passed the parity gate.
"""

from __future__ import annotations

import mlflow.pyfunc


class OnnxBundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from mlops_assets.core.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        import polars as pl

        frame = pl.from_pandas(model_input) if not isinstance(model_input, pl.DataFrame) else model_input
        return self.bundle.score_frame(frame).to_pandas()
