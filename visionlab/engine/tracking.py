"""Experiment tracking: MLflow (default: a local sqlite store next to the task folders in runs/) and
optionally TensorBoard. Only rank 0 creates a Tracker. A resumed run continues its MLflow run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ARTIFACT_DIR = "mlartifacts"


def default_tracking_uri(project: str | Path) -> str:
    """runs/segment -> sqlite:///<abs>/runs/mlflow.db (one store for every task under runs/)."""
    root = Path(project).resolve().parent
    return f"sqlite:///{root / 'mlflow.db'}"


def tracking_uri(cfg: Any) -> str:
    return cfg.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(cfg.project)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v
    return out


class Tracker:
    def __init__(self, cfg: Any, run_dir: Path, task: str):
        self.run_dir = run_dir
        self.task = task
        self.cfg = cfg
        self.mlflow = None
        self.tb = None
        if cfg.mlflow:
            import mlflow

            self.mlflow = mlflow
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from visionlab.utils.runtime import EnvironmentProblem

                raise EnvironmentProblem("tensorboard=true needs the tensorboard package: pip install 'visionlab[tensorboard]'") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def start(self, params: dict[str, Any]) -> None:
        if not self.mlflow:
            return
        uri = tracking_uri(self.cfg)
        self.mlflow.set_tracking_uri(uri)
        name = f"visionlab-{self.task}"
        if uri.startswith("sqlite:") and self.mlflow.get_experiment_by_name(name) is None:
            # keep artifacts beside the store, not in the current directory
            root = Path(uri.removeprefix("sqlite:///")).parent
            self.mlflow.create_experiment(name, artifact_location=(root / ARTIFACT_DIR).resolve().as_uri())
        self.mlflow.set_experiment(name)
        id_file = self.run_dir / "mlflow_run_id.txt"
        run_id = id_file.read_text().strip() if self.cfg.resume and id_file.is_file() else None
        run = self.mlflow.start_run(run_id=run_id, run_name=None if run_id else self.run_dir.name)
        id_file.write_text(run.info.run_id)
        if not run_id:
            self.mlflow.log_params({k: str(v)[:500] for k, v in _flat(params).items()})
            self.mlflow.set_tags({"visionlab.task": self.task, "visionlab.run_dir": str(self.run_dir.resolve())})

    def log_epoch(self, row: dict[str, Any], step: int) -> None:
        scalars = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k != "epoch" and v == v}
        if self.mlflow:
            self.mlflow.log_metrics(scalars, step=step)
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()

    def log_final(self, results: dict[str, Any], plots: list[Path], best: Path) -> None:
        if not self.mlflow:
            return
        final = {f"final.{k}": float(v) for k, v in _flat(results).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}
        self.mlflow.log_metrics(final)
        for path in [*plots, self.run_dir / "metrics.csv", self.run_dir / "results.json", self.run_dir / "config.yaml"]:
            if path.is_file():
                self.mlflow.log_artifact(str(path))
        self.mlflow.log_artifact(str(best), artifact_path="weights")

    def close(self) -> None:
        if self.mlflow:
            self.mlflow.end_run()
        if self.tb:
            self.tb.close()
