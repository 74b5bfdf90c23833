"""Shared test fixtures: quiet progress bars, the ../shared data folder, tiny trained runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("VISIONLAB_PROGRESS", "0")
REPO = Path(__file__).resolve().parents[1]

# settings that make a segmentation run take seconds on 2 CPU cores
TINY = ["imgsz=64", "synthetic_train=16", "synthetic_val=6", "batch=4", "workers=0", "mlflow=false"]


def shared_path(*parts: str) -> Path:
    """A path inside ../shared (or $VISIONLAB_SHARED); skips the test when it is absent."""
    path = Path(os.environ.get("VISIONLAB_SHARED", REPO.parent / "shared")).joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (set VISIONLAB_SHARED to the shared/ data folder)")
    return path


def png(path: Path, arr: "np.ndarray") -> Path:
    """Write ``arr`` as a PNG (parents created)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def run_cli(*args: str) -> tuple[int, str]:
    """Invoke the CLI in-process; returns (exit code, output)."""
    from typer.testing import CliRunner

    from visionlab.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch U-Net-mini run on synthetic scenes, shared by the tests that need a trained model."""
    project = tmp_path_factory.mktemp("runs")
    code, out = run_cli("segment", "train", *TINY, "epochs=2", f"project={project}", "name=tiny")
    assert code == 0, out
    return project / "tiny"
