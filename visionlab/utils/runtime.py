"""Device selection, seeding, run folders and the environment record written into every run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch


class EnvironmentProblem(RuntimeError):
    """The machine can't do what was asked: no CUDA, unwritable run folder, full disk."""


def select_device(spec: str = "auto") -> torch.device:
    """``auto`` -> first CUDA device if present, else CPU. A clear error for unavailable CUDA."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"device={spec} requested but CUDA is not available on this machine; use device=cpu")
        idx = int(spec.split(":")[1]) if ":" in spec else 0
        if idx >= torch.cuda.device_count():
            raise EnvironmentProblem(f"device={spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif spec != "cpu":
        raise EnvironmentProblem(f"device={spec} not understood: use auto, cpu, cuda or cuda:N")
    return torch.device(spec)


def default_threads() -> int:
    """Threads this process should use: OMP_NUM_THREADS when set (torchrun sets 1 per rank unless told
    otherwise), else the cores this process may run on (CPU affinity, not the machine's core count)
    shared between the ranks on this node."""
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        return int(omp)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def configure_cpu(threads: int = 0) -> None:
    """Use the cores this process may use (``threads=0``) or exactly ``threads``; flush denormals (they
    stall CPU inference 2-3x)."""
    torch.set_flush_denormal(True)
    torch.set_num_threads(threads if threads > 0 else default_threads())


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: an earlier deterministic run in this process must not leak into the next one
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def increment_path(base: Path, exist_ok: bool = False) -> Path:
    """runs/segment/train -> runs/segment/train2, train3 ... unless exist_ok."""
    if exist_ok or not base.exists():
        return base
    m = re.match(r"^(.*?)(\d*)$", base.name)
    stem = m.group(1) if m else base.name
    n = 2
    while (base.parent / f"{stem}{n}").exists():
        n += 1
    return base.parent / f"{stem}{n}"


def ensure_writable(folder: Path, need_bytes: int = 50 * 2**20) -> None:
    """Fail before training starts if the run folder can't be written or the disk is (nearly) full."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write_test"
        probe.write_bytes(b"0" * 1024)
        probe.unlink()
    except OSError as e:
        raise EnvironmentProblem(f"run folder {folder} is not writable: {e.strerror or e}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise EnvironmentProblem(
            f"only {free / 2**20:.0f} MiB free on the disk of {folder}; need at least {need_bytes / 2**20:.0f} MiB"
        )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict[str, Any]:
    packages = {}
    for name in ("visionlab", "torch", "torchvision", "timm", "segmentation-models-pytorch", "albumentations",
                 "torchmetrics", "numpy", "onnxruntime", "mlflow", "safetensors", "pydantic"):
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "packages": packages,
        "git_commit": _git_commit(),
        "argv": sys.argv,
    }


def write_env(path: Path) -> None:
    from visionlab.utils.files import atomic_write_text

    atomic_write_text(path, json.dumps(environment_info(), indent=2) + "\n")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
