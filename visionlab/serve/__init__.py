"""``visionlab serve``: the HTTP API (FastAPI) over trained models of any task. See docs/serving.md."""

from visionlab.serve.app import ServeSettings, create_app, serve

__all__ = ["ServeSettings", "create_app", "serve"]
