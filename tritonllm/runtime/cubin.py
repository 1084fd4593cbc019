"""Precompiled kernels: which cubins suit a GPU, how a launch finds its cubin, and launching
it through the CUDA driver API (no Triton compiler, no Triton cache).

A launch's identity is Triton's own specialization of its arguments (types, 16-byte
alignment and divisibility by 16 of pointers and integers, constexpr values) plus its launch
options, computed by Triton's binder for the cubin's architecture. The build records that
key for every launch the model makes; at run time the same key is computed from the real
arguments, so a call whose arguments lack a property the cubin assumed (an unaligned
pointer, say) finds no cubin and goes to JIT instead of computing garbage.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def cubin_arch_for(capability: int, built: tuple[int, ...]) -> int | None:
    """The built architecture whose cubins run on a GPU of `capability` (e.g. 86), if any.

    sm_8x binaries run on sm_8y with y >= x (the newest such x wins). Triton compiles sm_90 and
    sm_120 with their architecture-specific feature sets (sm_90a, sm_120a), whose binaries run
    only on exactly that architecture: sm_121, sm_100 and the rest go to JIT.
    """
    if capability // 10 == 8:
        same_major = [a for a in built if a // 10 == 8 and a <= capability]
        return max(same_major) if same_major else None
    return capability if capability in (90, 120) and capability in built else None


@functools.cache
def _binder(kernel, arch: int):
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", arch, 32))
    return backend, create_function_from_signature(kernel.compiled.signature, kernel.compiled.params, backend)


def specialize(kernel, arch: int, args: tuple, kwargs: dict):
    """(key, bound arguments, specialization) of a launch, as Triton would specialize it."""
    _, binder = _binder(kernel, arch)
    bound, spec, options = binder(*args, **kwargs)
    key = (tuple(spec), tuple(sorted(options.items())))
    return key, bound, spec


def key_to_json(key) -> list:
    spec, options = key
    return [[list(s) for s in spec], [list(o) for o in options]]


def key_from_json(data) -> tuple:
    spec, options = data
    return (tuple(tuple(s) for s in spec), tuple(tuple(o) for o in options))


def compile_spec(kernel, arch: int, args: tuple, kwargs: dict):
    """Compile the launch (kernel, args, kwargs) for `arch` with Triton's compiler."""
    from triton.compiler import ASTSource

    backend, binder = _binder(kernel, arch)
    bound, spec, options = binder(*args, **kwargs)
    opts, signature, constexprs, attrs = kernel.compiled._pack_args(backend, kwargs, bound, spec, options)
    source = ASTSource(kernel.compiled, signature, constexprs, attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=opts.__dict__)


class CudaError(RuntimeError):
    pass


class _LaunchAttribute(ctypes.Structure):  # CUlaunchAttribute: an id, then a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int), ("rest", ctypes.c_char * 60)]


class _LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_LaunchAttribute)), ("num_attrs", ctypes.c_uint)]


class _Driver:
    """The few CUDA driver calls a cubin launch needs, through ctypes."""

    MAX_DYNAMIC_SHARED = 8  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    PROGRAMMATIC_STREAM_SERIALIZATION = 6  # CU_LAUNCH_ATTRIBUTE_*

    def __init__(self):
        self.lib = ctypes.CDLL("libcuda.so.1")
        self.lib.cuLaunchKernel.argtypes = [
            ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.launch = self.lib.cuLaunchKernel
        self.lib.cuLaunchKernelEx.argtypes = [
            ctypes.POINTER(_LaunchConfig), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ]
        self.pdl_attr = _LaunchAttribute(id=self.PROGRAMMATIC_STREAM_SERIALIZATION, value=1)

    def launch_dependent(self, function, grid, threads: int, shared: int, stream, params) -> int:
        """cuLaunchKernel as a programmatic dependent launch: the kernel may start before the
        one ahead of it in the stream has finished (it waits itself: griddepcontrol.wait)."""
        config = _LaunchConfig(grid=(ctypes.c_uint * 3)(*grid), block=(ctypes.c_uint * 3)(threads, 1, 1), shared=shared,
                               stream=stream, attrs=ctypes.pointer(self.pdl_attr), num_attrs=1)
        return self.lib.cuLaunchKernelEx(ctypes.byref(config), function, params, None)

    def check(self, result: int, what: str) -> None:
        if result != 0:
            msg = ctypes.c_char_p()
            self.lib.cuGetErrorString(result, ctypes.byref(msg))
            raise CudaError(f"{what} failed: {msg.value.decode() if msg.value else result}")

    def load(self, image: bytes, name: str, shared: int) -> ctypes.c_void_p:
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(image)), f"loading {name}")
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()), f"finding {name}")
        if shared > 48 * 1024:
            self.check(self.lib.cuFuncSetAttribute(function, self.MAX_DYNAMIC_SHARED, shared), f"shared memory of {name}")
        return function


# struct codes for one 8-byte parameter slot (cuLaunchKernel reads each parameter's own
# size from its slot; little-endian, so a 4-byte int is the low half of an 8-byte one).
_SLOT = {"i1": "q", "i8": "q", "i16": "q", "i32": "q", "i64": "q", "u1": "Q", "u8": "Q", "u16": "Q",
         "u32": "Q", "u64": "Q", "fp32": "f4x", "fp64": "d"}


@dataclass
class Binary:
    """One loaded cubin: the launch it was built for and how to pack that launch's arguments."""

    kernel: str
    function: ctypes.c_void_p
    num_warps: int
    shared: int
    global_scratch: int  # bytes per program
    dependent: bool  # launched as a programmatic dependent (built with launch_pdl)
    args: list  # (position among the kernel's arguments, is pointer) of each non-constexpr argument
    layout: struct.Struct  # the parameter slots, plus global and profile scratch pointers
    buffer: ctypes.Array  # the slots, rewritten for each launch: cuLaunchKernel copies them
    params: ctypes.Array  # pointers to the slots, as cuLaunchKernel takes them

    @staticmethod
    def for_key(kernel: str, function, meta: dict, key) -> "Binary":
        spec = key[0]
        args = [(i, ty.startswith("*")) for i, (ty, _) in enumerate(spec) if ty != "constexpr"]
        codes = "".join("Q" if ty.startswith("*") else _SLOT[ty] for ty, _ in spec if ty != "constexpr")
        layout = struct.Struct("<" + codes + "QQ")
        buffer = ctypes.create_string_buffer(layout.size)
        base = ctypes.addressof(buffer)
        params = (ctypes.c_void_p * (len(args) + 2))(*range(base, base + layout.size, 8))
        dependent = bool(dict(key[1]).get("launch_pdl", False))
        return Binary(kernel, function, meta["num_warps"], meta["shared"], meta["global_scratch"], dependent, args,
                      layout, buffer, params)


@dataclass
class CubinLibrary:
    """The cubins of one architecture, loaded for one GPU, and the fallbacks seen so far."""

    arch: int
    device_index: int = 0
    binaries: dict = field(default_factory=dict)  # (kernel name, key) -> Binary
    fallbacks: dict = field(default_factory=dict)  # kernel name -> why it went to JIT
    launched: set = field(default_factory=set)  # kernel names launched from cubins

    def launch(self, kernel, grid, args: tuple, kwargs: dict) -> bool:
        """Launch from a cubin if one matches this call exactly; False means: use JIT.
        One thread launches at a time (each binary reuses its parameter buffer)."""
        key, bound, _ = specialize(kernel, self.arch, args, kwargs)
        binary = self.binaries.get((kernel.name, key))
        if binary is None:
            if kernel.name not in self.fallbacks:
                self.fallbacks[kernel.name] = "no cubin for this specialization"
                log.info("%s: no sm%d cubin for this call's specialization; using JIT", kernel.name, self.arch)
            return False
        values = list(bound.values())
        grid = tuple(grid) + (1,) * (3 - len(grid))
        scratch = None
        if binary.global_scratch:  # stream-ordered allocation: safe to drop after the launch
            scratch = torch.empty(binary.global_scratch * grid[0] * grid[1] * grid[2], dtype=torch.uint8,
                                  device=torch.device("cuda", self.device_index))
        binary.layout.pack_into(
            binary.buffer, 0, *[values[i].data_ptr() if pointer else values[i] for i, pointer in binary.args],
            scratch.data_ptr() if scratch is not None else 0, 0,
        )
        stream = torch._C._cuda_getCurrentRawStream(self.device_index)
        if binary.dependent:
            result = DRIVER.launch_dependent(binary.function, grid, 32 * binary.num_warps, binary.shared, stream,
                                             binary.params)
        else:
            result = DRIVER.launch(binary.function, grid[0], grid[1], grid[2], 32 * binary.num_warps, 1, 1,
                                   binary.shared, stream, binary.params, None)
        if result:
            DRIVER.check(result, f"launching {kernel.name}")
        self.launched.add(kernel.name)
        return True


class _LazyDriver:
    def __getattr__(self, name):
        global DRIVER
        DRIVER = _Driver()
        return getattr(DRIVER, name)


DRIVER = _LazyDriver()


def read_manifest(cubin_dir: Path) -> dict | None:
    path = cubin_dir / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def usable_entries(manifest: dict | None, arch: int, registry: dict) -> tuple[list[dict], dict[str, str]]:
    """The manifest entries of `arch` that may be launched, and why each other kernel may not:
    cubins of another Triton, stale (the kernel's source hash changed), or none built."""
    if manifest is None:
        return [], {name: "no cubins built" for name in registry}
    if manifest["triton"] != triton.__version__:
        why = f"cubins built with triton {manifest['triton']}, running {triton.__version__}"
        return [], {name: why for name in registry}
    reasons: dict[str, str] = {}
    for name, kernel in registry.items():
        built_hash = manifest["sources"].get(name)
        if built_hash is None:
            reasons[name] = "no cubins built"
        elif built_hash != kernel.source_hash:
            reasons[name] = "stale cubins: the kernel source changed since the build"
    entries = [e for e in manifest["archs"].get(str(arch), []) if e["kernel"] in registry and e["kernel"] not in reasons]
    for name in registry:
        if name not in reasons and not any(e["kernel"] == name for e in entries):
            reasons[name] = f"no sm{arch} cubin"
    return entries, reasons


def load_library(cubin_dir: Path, arch: int, registry: dict, device_index: int) -> tuple[CubinLibrary, dict[str, str]]:
    """Load every usable cubin of `arch` on the current GPU; returns the library and the
    kernels that run by JIT with the reason."""
    entries, reasons = usable_entries(read_manifest(cubin_dir), arch, registry)
    for name, why in reasons.items():
        if why.startswith("stale"):
            log.warning("%s: %s; using JIT", name, why)
    library = CubinLibrary(arch, device_index)
    for entry in entries:
        key = key_from_json(entry["key"])
        function = DRIVER.load((cubin_dir / entry["file"]).read_bytes(), entry["name"], entry["shared"])
        library.binaries[(entry["kernel"], key)] = Binary.for_key(entry["kernel"], function, entry, key)
    return library, reasons
