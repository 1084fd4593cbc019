"""Load a gpt-oss checkpoint folder (OpenAI `original/` or Hugging Face layout) onto a device.

The folder holds `config.json` and one or more `.safetensors` files (with
`model.safetensors.index.json` when sharded). Every file header and every expected tensor's
name, shape and dtype is checked before any weight is read; then tensors stream to the
device one at a time. Errors name the file and tensor at fault.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from tritonllm.model.config import ModelConfig
from tritonllm.model.safetensors_io import CheckpointError, SafetensorsFile
from tritonllm.model.weights import Spec, Weights, assemble, canonical_shape, checkpoint_specs, device_dtype

log = logging.getLogger(__name__)
FLOAT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def find_checkpoint_dir(path: str | Path) -> Path:
    """The folder holding config.json: `path` itself, or its `original/` subfolder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder not found")
    for candidate in (path, path / "original"):
        if (candidate / "config.json").is_file():
            return candidate
    raise CheckpointError(f"{path}: no config.json here or in {path / 'original'}")


def _open_files(folder: Path) -> dict[str, SafetensorsFile]:
    """Tensor name -> the file that holds it, from the index when there is one."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: corrupt index ({e})") from None
        names = sorted(set(weight_map.values()))
    else:
        names = sorted(p.name for p in folder.glob("*.safetensors"))
        if not names:
            raise CheckpointError(f"{folder}: no .safetensors files")
    by_tensor: dict[str, SafetensorsFile] = {}
    for name in names:
        f = SafetensorsFile(folder / name)  # raises for a missing, truncated or corrupt file
        for tensor in f.tensors:
            if tensor in by_tensor:
                raise CheckpointError(f"{f.path}: tensor {tensor!r} also in {by_tensor[tensor].path}")
            by_tensor[tensor] = f
    return by_tensor


def _check(spec: Spec, files: dict[str, SafetensorsFile], folder: Path) -> None:
    f = files.get(spec.name)
    if f is None:
        raise CheckpointError(f"{folder}: missing tensor {spec.name!r}")
    info = f.tensors[spec.name]
    ok = info.dtype == spec.dtype if spec.dtype == torch.uint8 else info.dtype in FLOAT_DTYPES
    if not ok:
        raise CheckpointError(
            f"{f.path}: tensor {spec.name!r} has dtype {info.dtype}, expected {spec.dtype}"
        )
    if info.shape != spec.shape:
        raise CheckpointError(
            f"{f.path}: tensor {spec.name!r} has shape {list(info.shape)}, expected {list(spec.shape)}"
        )


def load_checkpoint(path: str | Path, device: torch.device, progress: bool = True) -> Weights:
    """Read and validate a checkpoint folder and put its weights on `device`."""
    folder = find_checkpoint_dir(path)
    cfg = ModelConfig.from_file(folder / "config.json")
    files = _open_files(folder)
    layout = "hf" if any(name.startswith("model.") for name in files) else "original"
    specs = checkpoint_specs(cfg, layout)
    for spec in specs:
        _check(spec, files, folder)
    unused = set(files) - {s.name for s in specs}
    if unused:
        log.warning("%s: ignoring %d unexpected tensors, e.g. %s", folder, len(unused), sorted(unused)[:3])

    total = sum(files[s.name].tensors[s.name].nbytes for s in specs)
    tensors: dict[str, torch.Tensor] = {}
    with tqdm(total=total, unit="B", unit_scale=True, desc="loading weights", disable=not progress) as bar:
        for spec in specs:
            cpu = files[spec.name].read(spec.name)
            dtype = device_dtype(spec.target)
            if spec.target not in tensors:
                tensors[spec.target] = torch.empty(canonical_shape(cfg, spec.target), dtype=dtype, device=device)
            tensors[spec.target][spec.offset : spec.offset + spec.shape[0]].copy_(cpu.to(dtype))
            bar.update(cpu.numel() * cpu.element_size())
            del cpu
    log.info("loaded %s (%s layout, %d layers, %.2f GB)", folder, layout, cfg.num_hidden_layers, total / 1e9)
    return assemble(cfg, tensors)
