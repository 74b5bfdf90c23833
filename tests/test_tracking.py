"""MLflow (local sqlite store by default) and TensorBoard tracking; `visionlab runs`."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY, run_cli

NO_MLFLOW = [a for a in TINY if not a.startswith("mlflow=")]


def test_mlflow_sqlite_store_records_the_run(tmp_path: Path) -> None:
    project = tmp_path / "runs" / "segment"
    code, out = run_cli("segment", "train", *NO_MLFLOW, "epochs=2", f"project={project}", "name=tracked",
                        "tensorboard=true")
    assert code == 0, out
    db = tmp_path / "runs" / "mlflow.db"
    assert db.is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("visionlab-segment")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["epochs"] == "2" and run.data.params["model"] == "unet_mini"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "miou")] == [1, 2]
    assert "final.val.miou" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "metrics.csv", "results.json", "weights"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "weights")] == ["weights/best.safetensors"]
    run_dir = project / "tracked"
    assert (run_dir / "mlflow_run_id.txt").read_text() == run.info.run_id
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    # resuming with more epochs continues the same MLflow run
    code, out = run_cli("segment", "train", "resume=true", f"model={run_dir}", "epochs=3")
    assert code == 0, out
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(run.info.run_id, "miou")] == [1, 2, 3]


def test_runs_lists_finished_and_unfinished_runs(tiny_run: Path) -> None:
    code, out = run_cli("runs", str(tiny_run.parent))
    assert code == 0, out
    assert "tiny" in out and "segment" in out and "done" in out
