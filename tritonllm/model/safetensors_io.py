"""Streaming reader and writer for the safetensors format.

Format: an 8-byte little-endian header length N, N bytes of JSON mapping each tensor name
to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the
header), then the raw little-endian tensor bytes. The reader validates the whole header
against the file size up front, so a truncated or corrupt file fails with a message naming
the file and the tensor before any weight is used, and reads one tensor at a time so the
checkpoint is never copied whole into host memory.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

DTYPES = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I32": torch.int32,
    "I64": torch.int64,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, truncated, corrupt or of the wrong shape."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute file offset of the first byte
    nbytes: int


class SafetensorsFile:
    """One .safetensors file: its validated header, and tensors read on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                raw_len = f.read(8)
                if len(raw_len) < 8:
                    raise CheckpointError(f"{self.path}: file is truncated (no safetensors header)")
                (header_len,) = struct.unpack("<Q", raw_len)
                if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                    raise CheckpointError(
                        f"{self.path}: corrupt or truncated safetensors header "
                        f"(claims {header_len} bytes, file has {size})"
                    )
                header = json.loads(f.read(header_len))
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{self.path}: corrupt safetensors header (not a JSON object)")
        self.metadata = header.pop("__metadata__", {}) or {}
        data_start = 8 + header_len
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            self.tensors[name] = self._parse_entry(name, entry, data_start, size)

    def _parse_entry(self, name: str, entry, data_start: int, size: int) -> TensorInfo:
        where = f"{self.path}: tensor {name!r}"
        try:
            dtype = DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except KeyError as e:
            raise CheckpointError(f"{where}: corrupt header entry (missing or unknown {e})") from None
        except (TypeError, ValueError):
            raise CheckpointError(f"{where}: corrupt header entry {entry!r}") from None
        nbytes = end - begin
        numel = 1
        for s in shape:
            numel *= s
        if begin < 0 or nbytes != numel * dtype.itemsize:
            raise CheckpointError(
                f"{where}: corrupt header: {nbytes} bytes for shape {list(shape)} {entry['dtype']}"
            )
        if data_start + end > size:
            raise CheckpointError(
                f"{where}: file is truncated (tensor ends at byte {data_start + end}, "
                f"file has {size})"
            )
        return TensorInfo(name, dtype, shape, data_start + begin, nbytes)

    def read(self, name: str) -> torch.Tensor:
        """The tensor `name` as a CPU tensor (a fresh copy of its bytes)."""
        info = self.tensors[name]
        buf = bytearray(info.nbytes)
        with open(self.path, "rb") as f:
            f.seek(info.begin)
            if f.readinto(buf) != info.nbytes:
                raise CheckpointError(f"{self.path}: tensor {name!r}: file is truncated")
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=info.dtype)
        return torch.frombuffer(buf, dtype=info.dtype).reshape(info.shape)


def write_safetensors(
    path: str | Path,
    specs: Iterable[tuple[str, torch.dtype, tuple[int, ...]]],
    make_tensor: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file, making (and dropping) one tensor at a time.

    `specs` lists (name, dtype, shape) in file order; `make_tensor(name)` returns that
    tensor. The header is written first from the specs, so a checkpoint far larger than
    host memory can be written.
    """
    specs = list(specs)
    header: dict = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * dtype.itemsize
        header[name] = {
            "dtype": DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep tensor data 8-byte aligned, as the reference writer does
    tmp = Path(str(path) + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, dtype, shape in specs:
            t = make_tensor(name)
            if t.dtype != dtype or tuple(t.shape) != tuple(shape):
                raise ValueError(f"{name}: made {t.dtype} {list(t.shape)}, spec says {dtype} {list(shape)}")
            f.write(t.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    os.replace(tmp, path)
