"""An MLflow tracking server that fails chosen requests, for the registry-fault drills."""

from __future__ import annotations

import os
import threading


class FlakyTrackingServer:
    """MLflow's own tracking server (its Flask app, served from a thread of this process) behind
    a switch that answers 503 to chosen REST endpoints, e.g. `registered-models/get`.

    Served in-process because `mlflow server` took 14 s to answer its first request here."""

    def __init__(self, backend_uri: str, artifact_root: str):
        import mlflow
        from mlflow.server import app, handlers
        from werkzeug.serving import make_server

        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        handlers._tracking_store = handlers._model_registry_store = None
        handlers._get_tracking_store(backend_uri, artifact_root)
        handlers._get_model_registry_store(backend_uri)
        mlflow.set_tracking_uri(tracking)          # the store setup points the fluent API at it
        mlflow.set_registry_uri(registry)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.handlers = handlers
        self.failing: set[str] = set()
        self.after: str | None = None
        self.refused: list[str] = []
        self.requests: list[str] = []

        def wsgi(environ, start_response):
            path = environ.get("PATH_INFO", "")
            self.requests.append(f"{environ.get('REQUEST_METHOD')} {path}")
            if self.after is not None:
                if path.endswith(self.after):
                    self.after = None
            elif any(path.endswith(endpoint) for endpoint in self.failing):
                self.refused.append(path)
                start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
                return [b"service unavailable (injected)"]
            return app(environ, start_response)

        self.server = make_server("127.0.0.1", 0, wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arm(self, *endpoints: str, after: str | None = None) -> None:
        """Answer 503 to these endpoints (all of them once `after` has been requested)."""
        self.failing, self.after, self.refused = set(endpoints), after, []

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.handlers._tracking_store = self.handlers._model_registry_store = None

