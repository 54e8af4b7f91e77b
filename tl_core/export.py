"""Export a trained run as a state_dict, TorchScript or ONNX file.

Class names and preprocessing go beside the model (`<out>.json`), and into the file where the
format allows (TorchScript's extra files, ONNX metadata), so a model is never separated from
what it needs to be used correctly. TorchScript is made by tracing, since scripting fails on
some backbones (EfficientNet's swish, for one).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from tl_core.errors import LabError
from tl_core.evaluate import TrainedModel
from tl_core.runs import atomic_torch_save, atomic_write_bytes

FORMATS = ("state_dict", "torchscript", "onnx")


def export_info(trained: TrainedModel, fmt: str) -> dict:
    return {
        "run_id": trained.run_id,
        "format": fmt,
        "backbone": trained.backbone,
        "strategy": trained.strategy,
        "classes": trained.classes,
        "preprocessing": trained.preprocessing.to_dict(),
        "input": "float32 [N, 3, H, W]: RGB scaled to [0, 1], shorter side resized to resize_size, "
        "centre-cropped to input_size, normalised with mean and std",
        "output": "logits [N, num_classes]; softmax gives probabilities",
    }


def export_model(trained: TrainedModel, fmt: str, out: str | Path) -> dict:
    """Write the model to `out` and its description to `out` + `.json`; returns the description."""
    if fmt not in FORMATS:
        raise LabError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(out).expanduser()
    if out.is_dir():
        raise LabError(f"{out} is a folder; give a file name for the exported model")
    if not out.parent.is_dir():
        raise LabError(f"folder {out.parent} does not exist")
    info = export_info(trained, fmt)
    model = trained.model.eval()
    size = trained.preprocessing.input_size
    example = torch.zeros(1, 3, size, size)
    if fmt == "state_dict":
        atomic_torch_save({"state_dict": model.state_dict(), **info}, out)
    elif fmt == "torchscript":
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
        tmp = out.with_name(f".{out.name}.tmp")
        with _quiet_jit():
            torch.jit.save(traced, str(tmp), _extra_files={"tl_lab.json": json.dumps(info)})
        tmp.replace(out)
    else:
        _export_onnx(model, example, out, info)
    atomic_write_bytes(out.with_name(out.name + ".json"), json.dumps(info, indent=1).encode())
    return {**info, "path": str(out)}


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch 2.9+ warns that TorchScript's save and load are deprecated (for torch.export).
    The format is still what `--format torchscript` promises and loads in C++ and older
    torch, so that one FutureWarning is silenced; any other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning
        )
        yield


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, out: Path, info: dict) -> None:
    import onnx

    tmp = out.with_name(f".{out.name}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "tl_lab", json.dumps(info)
    onnx.save(proto, str(tmp))
    tmp.replace(out)


def load_export(path: str | Path, fmt: str):
    """Reload an export and return a callable mapping a float batch to logits (numpy)."""
    path = Path(path)
    if fmt == "torchscript":
        with _quiet_jit():
            module = torch.jit.load(str(path)).eval()
        return lambda x: module(torch.as_tensor(x)).detach().numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(
            ["logits"], {"image": x.numpy() if hasattr(x, "numpy") else x}
        )[0]
    if fmt == "state_dict":
        from tl_core.models import build_for_inference

        blob = torch.load(path, map_location="cpu", weights_only=True)
        module = build_for_inference(blob["backbone"], len(blob["classes"]))
        module.load_state_dict(blob["state_dict"])
        module.eval()
        return lambda x: module(torch.as_tensor(x)).detach().numpy()
    raise LabError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
