"""Command line: ``visionlab TASK MODE key=value ...`` plus ``data``, ``compare``, ``runs``, ``models``.

Every user-facing error is one red line naming the file or key at fault (VISIONLAB_DEBUG=1 shows the
traceback); exit code 2 for bad input, 1 for a failed check.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

from visionlab.utils.progress import console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="visionlab: train, evaluate and use vision models. Usage: visionlab TASK MODE key=value ...")
data_app = typer.Typer(no_args_is_help=True, help="Check and benchmark datasets.")
app.add_typer(data_app, name="data")

KV_HELP = "Settings as key=value (see the task's default YAML, e.g. `visionlab segment cfg`)."


def _user_errors() -> tuple[type[BaseException], ...]:
    from visionlab.cfg import ConfigError
    from visionlab.data.io import DataError
    from visionlab.utils.checkpoint import CheckpointError
    from visionlab.utils.runtime import EnvironmentProblem

    errors: list[type[BaseException]] = [ConfigError, DataError, CheckpointError, EnvironmentProblem,
                                         FileNotFoundError, PermissionError, FloatingPointError]
    try:
        from visionlab.models.pretrained import PretrainedError

        errors.append(PretrainedError)
    except ImportError:
        pass
    return tuple(errors)


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _one_line_warnings(show: Callable[..., None]) -> Callable[..., None]:
    """visionlab's own warnings (skipped files, ...) as one 'warning:' line; other libraries' as they come."""

    def showwarning(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if not str(filename).startswith(_PACKAGE_DIR):
            return show(message, category, filename, lineno, file, line)
        from rich.markup import escape

        console.print(f"[yellow]warning:[/] {escape(str(message))}", soft_wrap=True)

    return showwarning


def _guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; turn known user errors into one clear line and exit code 2."""
    try:
        with warnings.catch_warnings():  # restores the previous showwarning afterwards
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            return fn()
    except _user_errors() as e:
        if os.environ.get("VISIONLAB_DEBUG"):
            raise
        message = str(e)
        if "Original Traceback" in message:  # raised in a DataLoader worker: keep the original message only
            message = message.rsplit(f"{type(e).__name__}: ", 1)[-1].strip()
        from rich.markup import escape

        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/] (resume with resume=true)")
        raise typer.Exit(130) from None


def _config(task_name: str, args: list[str], mode: str) -> tuple[Any, Any]:
    from visionlab.cfg import parse_overrides
    from visionlab.engine.evaluator import eval_config
    from visionlab.engine.trainer import train_config
    from visionlab.tasks.base import get_task

    task = get_task(task_name)
    overrides = parse_overrides(args or [])
    return task, train_config(task, overrides) if mode == "train" else eval_config(task, overrides, mode)


def _task_app(task_name: str, title: str) -> typer.Typer:
    sub = typer.Typer(no_args_is_help=True, help=title)

    @sub.command(help=f"Train a {task_name} model. e.g. `visionlab {task_name} train epochs=5 imgsz=128`")
    def train(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP)) -> None:
        from visionlab.engine.trainer import train as run_train

        _guarded(lambda: run_train(*_config(task_name, args, "train")))

    @sub.command(help=f"Evaluate a checkpoint. e.g. `visionlab {task_name} val model=runs/{task_name}/train split=val`")
    def val(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP)) -> None:
        from visionlab.engine.evaluator import run_val

        _guarded(lambda: run_val(*_config(task_name, args, "val")))

    @sub.command(help=f"Predict on an image, folder or dataset. e.g. `visionlab {task_name} predict model=PATH source=img.png`")
    def predict(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP)) -> None:
        from visionlab.engine.predictor import run_predict

        def go() -> Any:
            extra = list(args or [])
            if extra and "=" not in extra[0]:  # `predict SOURCE model=...` form
                extra[0] = f"source={extra[0]}"
            return run_predict(*_config(task_name, extra, "predict"))

        _guarded(go)

    from visionlab.tasks.base import get_task

    for mode, (help_line, fn) in get_task(task_name).commands().items():
        _add_mode(sub, mode, help_line, fn)

    @sub.command(help="Print the default settings (default.yaml, then the task's overlay).")
    def cfg() -> None:
        from visionlab.cfg import config_text

        # plain stdout, never re-wrapped to the terminal's width: `visionlab TASK cfg > my.yaml` must stay valid YAML
        sys.stdout.write(config_text(task_name))

    return sub


def _add_mode(sub: typer.Typer, mode: str, help_line: str, fn: Callable[[dict[str, Any]], Any]) -> None:
    def command(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP)) -> None:
        from visionlab.cfg import parse_overrides

        _guarded(lambda: fn(parse_overrides(args or [])))

    sub.command(name=mode, help=help_line)(command)


def _add_task_apps() -> None:
    from visionlab.tasks.base import get_task, task_names

    for name in task_names():
        app.add_typer(_task_app(name, get_task(name).description), name=name)


_add_task_apps()


@data_app.command("check", help="Scan a dataset (e.g. camvid:DIR or a folder): names every bad file, writes a manifest.")
def data_check(
    path: str = typer.Argument(..., help="dataset spec or folder: camvid:DIR, cityscapes:DIR, folder:DIR, DIR, data.yaml"),
    out: Optional[Path] = typer.Option(None, help="manifest JSON path (default runs/data/<name>_manifest.json)"),
    task: str = typer.Option("segment", help="the task whose data layouts and label rules apply"),
) -> None:
    code = _guarded(lambda: _task_or_error(task).check_data(path, out, console))
    raise typer.Exit(code)


@data_app.command("bench", help="Training data pipeline speed in images/s. e.g. `visionlab data bench data=camvid:DIR workers=2`")
def data_bench(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP),
               batches: int = typer.Option(20, help="batches to time (after one warm-up batch)"),
               task: str = typer.Option("segment", help="the task whose training pipeline is timed")) -> None:
    from visionlab.engine.databench import bench

    _guarded(lambda: bench(*_config(_task_or_error(task).name, args, "train"), batches=batches))


def _task_or_error(name: str) -> Any:
    from visionlab.cfg import ConfigError
    from visionlab.tasks.base import get_task

    try:
        return get_task(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@app.command(help="Compare runs: a table (markdown + CSV) of metrics, params, time, memory, speed.")
def compare(
    runs: list[str] = typer.Argument(..., help="run folders, or folders of runs such as runs/segment"),
    out: Optional[Path] = typer.Option(None, help="write OUT.md and OUT.csv (default runs/compare)"),
) -> None:
    from visionlab.engine.compare import compare as do_compare
    from visionlab.engine.compare import print_table

    target = out or Path("runs") / "compare"

    def go() -> None:
        columns, records = do_compare(runs, target)
        print_table(columns, records, console, f"{len(records)} runs")
        console.print(f"written {target.with_suffix('.md')} and {target.with_suffix('.csv')}")

    _guarded(go)


@app.command("runs", help="List runs under a folder (default runs/) with their key metrics.")
def list_runs(root: str = typer.Argument("runs", help="folder holding task/run folders")) -> None:
    from visionlab.engine.compare import compare as do_compare
    from visionlab.engine.compare import print_table

    def go() -> None:
        columns, records = do_compare([root], None)
        for r in records:  # names relative to the listed folder keep the table narrow
            r["run"] = str(Path(r["run"]).relative_to(root)) if Path(r["run"]).is_relative_to(root) else r["run"]
        keep = ["run", "task", "model", "data", "epochs", "fitness", "train_min", "status"]
        print_table([c for c in columns if c in keep], records, console, f"runs in {root}")

    _guarded(go)


@app.command(help="Benchmark a checkpoint as inference variants (eager, channels_last, compile, bf16, fp16, ort, "
                  "ort_int8_static, ort_int8_dynamic): latency, throughput, size, memory and the task's metric per "
                  "variant. e.g. `visionlab bench model=runs/segment/train variants=[eager,ort] iters=50`")
def bench(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP + " Plus variants, warmup, iters, repeats, "
                                                      "calib, max_images, tolerance, opset.")) -> None:
    from visionlab.cfg import parse_overrides
    from visionlab.engine.bench import run_bench

    _guarded(lambda: run_bench(parse_overrides(args or [])))


@app.command(help="Export a checkpoint to onnx | onnx-int8 | torchscript | ort, with a parity check against "
                  "PyTorch (<file>.parity.json). e.g. `visionlab export model=runs/segment/train format=onnx`")
def export(args: Optional[list[str]] = typer.Argument(None, help=KV_HELP + " Plus format, opset, out, dynamic, "
                                                       "max_images, calib.")) -> None:
    from visionlab.cfg import parse_overrides
    from visionlab.engine.export import run_export

    _guarded(lambda: run_export(parse_overrides(args or [])))


@app.command(help="List the registered models of each task.")
def models() -> None:
    from visionlab.models.registry import list_models
    from visionlab.tasks.base import task_names

    for name in task_names():
        console.print(f"[bold]{name}[/]: {', '.join(list_models(name))}")


@app.command(help="Serve models over HTTP (FastAPI; OpenAPI at /docs). e.g. `visionlab serve model=runs/segment/exp "
                  "model=depth=runs/depth/exp port=8000 api_key=SECRET` (see docs/serving.md)")
def serve(args: Optional[list[str]] = typer.Argument(
        None, help="model=PATH or model=NAME=PATH (repeatable), host=, port=, api_key=, device=, max_batch=, "
                   "max_wait_ms=, max_pending=, max_mb=, max_pixels=, log_level=")) -> None:
    from visionlab.serve.settings import parse_serve_args

    def go() -> None:
        from visionlab.serve.app import serve as run_server

        models, host, port, settings, log_level = parse_serve_args(list(args or []))
        run_server(models, host, port, settings, log_level)

    _guarded(go)


@app.command(help="Web dashboard (Streamlit) over a running API and run folders. e.g. `visionlab dashboard "
                  "api=http://127.0.0.1:8000 data=camvid:../shared/data/camvid runs=runs port=8501`")
def dashboard(args: Optional[list[str]] = typer.Argument(
        None, help="api= (the visionlab serve URL), data= (dataset spec to pick images from), runs= (folder of "
                   "runs), host=, port=")) -> None:
    from visionlab.dashboard import launch

    code = _guarded(lambda: launch(list(args or [])))
    raise typer.Exit(code or 0)


def main() -> None:
    app(prog_name="visionlab")


if __name__ == "__main__":
    sys.exit(main())
