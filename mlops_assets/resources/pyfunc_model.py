"""The MLflow pyfunc model, logged as models-from-code: `mlflow models serve -m models:/<name>@champion`.

MLflow runs this file to build the model (no cloudpickle: a tampered pickle in the artifact
store cannot run code on `load_model`). It scores raw feature frames through the same ONNX
bundle the batch job uses, so what is served is exactly what passed the parity gate.
"""

from __future__ import annotations

import mlflow.models
import mlflow.pyfunc
import pandas as pd


class OnnxBundleModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from mlops_assets.core.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import polars as pl

        frame = model_input if isinstance(model_input, pl.DataFrame) else pl.from_pandas(model_input)
        return self.bundle.score_frame(frame).to_pandas()


mlflow.models.set_model(OnnxBundleModel())
