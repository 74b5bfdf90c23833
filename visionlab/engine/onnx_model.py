"""ONNX Runtime sessions behind the call every visionlab model has: float RGB 0..255, Bx3xHxW torch tensor
in, torch tensor out. ``evaluate``, ``Task.infer``, predict and bench then use exported models unchanged.
Also the graph tools export and bench share: ORT graph optimisation and INT8 quantisation (static QDQ
calibrated on real images, dynamic).

Metadata travels inside the file (ONNX ``metadata_props``, each value JSON): task, arch, arch_kwargs,
labels, imgsz, input_multiple, the training config, visionlab version. ``read_onnx_meta`` returns it in the
shape of a checkpoint's metadata, so ``load_model`` / ``eval_config`` treat ``.onnx`` files like checkpoints.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visionlab.utils.checkpoint import CheckpointError

ONNX_SUFFIXES = (".onnx", ".ort")  # .ort: ONNX Runtime's own format (on-device builds)


def is_onnx_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in ONNX_SUFFIXES


def session_options(threads: int = 0, level: str = "all") -> Any:
    """ORT options: graph optimisation ``level`` (disable | basic | extended | all) and intra-op threads
    (0 = the cores torch uses, i.e. ``configure_cpu``'s choice)."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    so.intra_op_num_threads = threads if threads > 0 else torch.get_num_threads()
    so.inter_op_num_threads = 1  # one request at a time: parallelism inside ops, not between them
    so.log_severity_level = 3  # errors only: ORT's "removing unused initializer" warnings are noise
    return so


def providers_for(device: torch.device | str) -> list[str]:
    import onnxruntime as ort

    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def open_session(path: str | Path, threads: int = 0, level: str = "all", device: torch.device | str = "cpu") -> Any:
    """An InferenceSession; CheckpointError naming the file if ORT cannot read it."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found")
    try:
        return ort.InferenceSession(str(path), session_options(threads, level), providers=providers_for(device))
    except Exception as e:  # ORT raises its own exception types (InvalidProtobuf, Fail ...)
        raise CheckpointError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None


def read_onnx_meta(path: str | Path, session: Any | None = None) -> dict[str, Any]:
    """The visionlab metadata of an exported file (CheckpointError if it has none)."""
    path = Path(path)
    session = session or open_session(path, level="disable")
    raw = session.get_modelmeta().custom_metadata_map
    if "task" not in raw:
        raise CheckpointError(f"{path}: an ONNX file without visionlab metadata (no 'task'); export it with "
                              f"`visionlab export model=CHECKPOINT format=onnx`")
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    meta.setdefault("arch_kwargs", {})
    meta.setdefault("config", {})
    meta["format"] = path.suffix.lstrip(".").lower()
    return meta


def write_onnx_meta(path: str | Path, meta: dict[str, Any]) -> None:
    """Store ``meta`` (JSON values) in the file's metadata_props, replacing keys of the same name."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: json.dumps(v, default=str) for k, v in meta.items()})
    onnx.helper.set_model_props(model, props)
    onnx.save(model, str(path))


class OnnxModel(nn.Module):
    """An ORT session as a module: ``model(x)`` with x float 0..255 Bx3xHxW -> torch tensor on x's device.

    A file exported with a fixed batch size runs any batch as chunks of that size (the last one padded),
    so fixed-shape files (what bench uses: shape arithmetic folds away) still evaluate like any model.
    ``input_multiple`` and ``class_names`` come from the metadata, as a torch model carries them."""

    def __init__(self, path: str | Path, threads: int = 0, level: str = "all", device: torch.device | str = "cpu"):
        super().__init__()
        self.path = Path(path)
        self.session = open_session(self.path, threads, level, device)
        self.input_name = self.session.get_inputs()[0].name
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None
        hw = self.session.get_inputs()[0].shape[2:]
        # exported without dynamic H/W: the only input size the graph takes (keep_aspect cannot apply)
        self.fixed_hw = tuple(hw) if len(hw) == 2 and all(isinstance(d, int) and d > 0 for d in hw) else None
        try:
            self.meta = read_onnx_meta(self.path, self.session)
        except CheckpointError:
            self.meta = {}
        self.input_multiple = int(self.meta.get("input_multiple", 1) or 1)
        self.class_names = self.meta.get("labels")

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().float().cpu().contiguous().numpy()
        n, step = len(array), self.fixed_batch
        if step is None or n == step:
            out = self.run(array)
        else:
            chunks = []
            for start in range(0, n, step):
                chunk = array[start:start + step]
                if len(chunk) < step:  # pad with copies of the last image, drop their outputs
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), 0)])
                chunks.append(self.run(chunk)[: min(step, n - start)])
            out = np.concatenate(chunks)
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"path={self.path}, fixed_batch={self.fixed_batch}"


def load_onnx_model(path: str | Path, device: torch.device | str = "cpu", task: Any | None = None,
                    threads: int = 0) -> tuple[OnnxModel, dict[str, Any]]:
    """(OnnxModel, metadata like a checkpoint's); ``task`` (a Task) must match the file's task."""
    path = Path(path)
    model = OnnxModel(path, threads=threads, device=device)
    if not model.meta:
        read_onnx_meta(path, model.session)  # raises the one-line "no visionlab metadata" error
    meta = dict(model.meta)
    if task is not None and meta.get("task") != task.name:
        raise CheckpointError(f"{path}: is a '{meta.get('task')}' model, not a '{task.name}' one")
    meta["path"] = str(path)
    meta.setdefault("params", 0)
    return model, meta


# ----------------------------------------------------------------------------- graph tools: optimise, INT8


def optimize_onnx(src: str | Path, dst: str | Path, level: str = "basic", ort_format: bool = False) -> Path:
    """Save ONNX Runtime's optimised graph. ``basic`` is hardware-independent: constant folding (the shape
    arithmetic of fixed-shape graphs, e.g. TF 'same' padding, disappears), Conv+BN fusion, redundant nodes."""
    import onnxruntime as ort

    so = session_options(level=level)
    so.optimized_model_filepath = str(dst)
    if ort_format:
        so.add_session_config_entry("session.save_model_format", "ORT")
    try:
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    except Exception:
        open_session(src)  # raises the one-line CheckpointError naming the file
        raise
    return Path(dst)


# ----------------------------------------------------------------------------- INT8


def shape_subgraph_nodes(model: Any) -> list[str]:
    """Names of the nodes that compute shapes (from ``Shape`` outputs and constants only). Quantising them
    would round pad sizes and resize targets (a broken graph), so they stay float."""
    graph = model.graph
    constant = {t.name for t in graph.initializer}
    shape_values: set[str] = set()
    names = []
    for node in graph.node:  # ONNX nodes are stored in topological order
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant":
            constant.update(node.output)
        elif node.op_type == "Shape" or (inputs and any(i in shape_values for i in inputs)
                                         and all(i in shape_values or i in constant for i in inputs)):
            shape_values.update(node.output)
            names.append(node.name)
    return names


def vnni_available() -> bool:
    flags = cpu_flags()
    return flags.get("avx512_vnni", False) or flags.get("avx_vnni", False) or flags.get("amx_int8", False)


def cpu_flags() -> dict[str, bool]:
    """The x86 features that decide which CPU kernels run (from /proc/cpuinfo; all False elsewhere)."""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8")
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        present = set(line.split(":", 1)[-1].split())
    except OSError:
        present = set()
    return {f: f in present for f in wanted}


class _quiet_root_logger:
    """onnxruntime.quantization logs a warning on the root logger for every 1-D constant it skips for
    per-channel quantisation (GroupNorm reshapes): hundreds of lines of noise."""

    def __enter__(self) -> None:
        import logging

        self.level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        import logging

        logging.getLogger().setLevel(self.level)


class _Batches:
    """onnxruntime.quantization's CalibrationDataReader protocol over a list of NCHW float batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.input_name, self.batches = input_name, list(batches)
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def _prepare_for_quantization(src: Path, dst: Path) -> Path:
    """ORT basic optimisation, then ORT's recommended pre-processing with ONNX shape inference. Symbolic
    shape inference (meant for transformers) is skipped: it cannot finish on dynamic H/W through TF 'same'
    padding, and when it fails it leaves a temporary model in the working directory."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    basic = dst.with_name(dst.stem + ".basic.onnx")
    optimize_onnx(src, basic, "basic")
    quant_pre_process(str(basic), str(dst), skip_optimization=True, skip_symbolic_shape=True)
    basic.unlink(missing_ok=True)
    return dst


def quantize_static_onnx(src: str | Path, dst: str | Path, batches: list[np.ndarray], per_channel: bool = True,
                         reduce_range: bool | None = None) -> Path:
    """Static QDQ INT8: per-channel int8 weights, uint8 activations with ranges from ``batches`` (real
    images, float 0..255 NCHW). ``reduce_range`` (default: when the CPU has no VNNI) keeps weights to 7 bits
    so AVX2's u8 x s8 multiply-add cannot saturate (onnxruntime's advice for pre-VNNI x86)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    src, dst = Path(src), Path(dst)
    if not batches:
        raise ValueError("static quantisation needs at least one calibration image")
    with tempfile.TemporaryDirectory() as tmp:
        pre = _prepare_for_quantization(src, Path(tmp) / "pre.onnx")
        model = onnx.load(str(pre))
        with _quiet_root_logger():
            quantize_static(str(pre), str(dst), _Batches(model.graph.input[0].name, batches),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            reduce_range=(not vnni_available()) if reduce_range is None else reduce_range,
                            nodes_to_exclude=shape_subgraph_nodes(model))
    return dst


def quantize_dynamic_onnx(src: str | Path, dst: str | Path) -> Path:
    """Dynamic INT8: weights quantised offline, activations per call (no calibration data). ORT's
    ConvInteger takes uint8 weights."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        pre = _prepare_for_quantization(src, Path(tmp) / "pre.onnx")
        with _quiet_root_logger():
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QUInt8,
                             nodes_to_exclude=shape_subgraph_nodes(onnx.load(str(pre))))
    return dst
