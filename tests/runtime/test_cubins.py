"""The cubin build and runtime on the CPU: committed cubins up to date, ELF per architecture,
reproducible build, architecture dispatch, stale-binary refusal, specialization guard, env."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton

from build_kernels.__main__ import check
from build_kernels.trace import trace
from tritonllm.env import runtime_config
from tritonllm.runtime.cubin import (
    Binary, CubinLibrary, cubin_arch_for, key_from_json, read_manifest, specialize, usable_entries,
)
from tritonllm.runtime.kernel import REGISTRY
from tritonllm.runtime.settings import DEFAULT_CUBIN_DIR, RuntimeConfigError
from tritonllm.runtime.target import ARCHS

ROOT = Path(__file__).resolve().parents[2]
CUOBJDUMP = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


def _registry():
    import tritonllm.kernels.all  # noqa: F401

    return REGISTRY


def test_committed_cubins_are_up_to_date_with_sources_and_launches():
    # Fails when a kernel or a launcher's tile choice changes without `python -m build_kernels`.
    assert check(DEFAULT_CUBIN_DIR) == []


def test_every_kernel_is_launched_and_built_for_every_architecture():
    manifest = read_manifest(DEFAULT_CUBIN_DIR)
    assert sorted(int(a) for a in manifest["archs"]) == list(ARCHS)
    for arch in ARCHS:
        assert {name for name, _ in trace(arch)} == set(_registry())
        assert {e["kernel"] for e in manifest["archs"][str(arch)]} == set(_registry())


@pytest.mark.parametrize("arch", ARCHS)
def test_every_cubin_is_an_elf_for_its_architecture(arch):
    manifest = read_manifest(DEFAULT_CUBIN_DIR)
    want = f"sm_{arch}a" if arch in (90, 120) else f"sm_{arch}"  # Triton's arch-specific targets
    for entry in manifest["archs"][str(arch)]:
        path = DEFAULT_CUBIN_DIR / entry["file"]
        assert path.read_bytes()[:4] == b"\x7fELF"
        listing = subprocess.run([str(CUOBJDUMP), "-lelf", str(path)], capture_output=True, text=True, check=True).stdout
        assert f".{want}.cubin" in listing, listing


def test_build_is_reproducible(tmp_path):
    """Two builds from clean compiler caches give the committed bytes."""
    outs = []
    for i in range(2):
        out = tmp_path / f"build{i}"
        env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path / f"cache{i}")}
        env.pop("TRITON_INTERPRET", None)
        cmd = [sys.executable, "-m", "build_kernels", "--arch", "90", "--arch", "86", "--kernel", "rmsnorm_kernel",
               "--jobs", "1", "--out", str(out)]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*.cubin"))
    assert len(files) == 2
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes() == (DEFAULT_CUBIN_DIR / f).read_bytes()
    assert (outs[0] / "manifest.json").read_bytes() == (outs[1] / "manifest.json").read_bytes()


@pytest.mark.parametrize(
    "capability,arch",
    [(80, 80), (86, 86), (87, 86), (89, 89), (90, 90), (120, 120), (121, None),
     (75, None), (100, None), (103, None), (70, None)],
)
def test_dispatch_picks_the_binary_compatible_architecture(capability, arch):
    assert cubin_arch_for(capability, ARCHS) == arch


def test_sm8x_picks_the_newest_compatible_build():
    assert cubin_arch_for(89, (80, 86)) == 86
    assert cubin_arch_for(86, (80, 89)) == 80
    assert cubin_arch_for(90, (80, 86, 89)) is None  # sm_90 runs sm_90a binaries only


def test_stale_cubins_are_refused():
    registry = _registry()
    manifest = json.loads((DEFAULT_CUBIN_DIR / "manifest.json").read_text())
    entries, reasons = usable_entries(manifest, 90, registry)
    assert not reasons and {e["kernel"] for e in entries} == set(registry)
    manifest["sources"]["rmsnorm_kernel"] = "0" * 64  # as if the kernel changed after the build
    entries, reasons = usable_entries(manifest, 90, registry)
    assert reasons == {"rmsnorm_kernel": "stale cubins: the kernel source changed since the build"}
    assert "rmsnorm_kernel" not in {e["kernel"] for e in entries}
    manifest["triton"] = "0.0.1"
    assert all("triton 0.0.1" in why for why in usable_entries(manifest, 90, registry)[1].values())


def test_arguments_outside_the_specialization_go_to_jit():
    from tritonllm.kernels.rmsnorm import rmsnorm_kernel

    manifest = read_manifest(DEFAULT_CUBIN_DIR)
    entry = next(e for e in manifest["archs"]["90"] if e["kernel"] == "rmsnorm_kernel")
    key = key_from_json(entry["key"])
    library = CubinLibrary(90)
    library.binaries[("rmsnorm_kernel", key)] = Binary.for_key("rmsnorm_kernel", None, entry, key)
    x = torch.empty(2, 2880)
    scale = torch.ones(2880)
    hi, lo = torch.empty(2, 2880, dtype=torch.bfloat16), torch.empty(2, 2880, dtype=torch.bfloat16)
    aligned = (x, scale, hi, lo, 2880, 1e-5)
    kwargs = {"BLOCK_H": 4096, "num_warps": 4}
    assert specialize(rmsnorm_kernel, 90, aligned, kwargs)[0] == key
    storage = torch.empty(2 * 2880 + 1)
    misaligned = storage[1:].view(2, 2880)  # 4 bytes past a 16-byte boundary
    assert misaligned.data_ptr() % 16
    assert specialize(rmsnorm_kernel, 90, (misaligned, scale, hi, lo, 2880, 1e-5), kwargs)[0] != key
    assert library.launch(rmsnorm_kernel, (2,), (misaligned, scale, hi, lo, 2880, 1e-5), kwargs) is False
    assert library.fallbacks == {"rmsnorm_kernel": "no cubin for this specialization"}


@pytest.mark.parametrize(
    "env,message",
    [({"TRITONLLM_JIT_BACKEND": "tvm"}, "unknown JIT backend 'tvm': set TRITONLLM_JIT_BACKEND to one of triton, triton_runner"),
     ({"TRITONLLM_CUBIN": "yes"}, "TRITONLLM_CUBIN must be 0 or 1")],
)
def test_bad_environment_values_are_refused(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(RuntimeConfigError, match=message):
        runtime_config()


def test_missing_triton_runner_says_what_to_install(monkeypatch):
    monkeypatch.setenv("TRITONLLM_JIT_BACKEND", "triton_runner")
    monkeypatch.setitem(sys.modules, "triton_runner", None)  # as if not installed
    with pytest.raises(RuntimeConfigError, match=r"pip install 'tritonllm\[runner\]'"):
        runtime_config()


def test_defaults_and_cubin_switch(monkeypatch):
    monkeypatch.delenv("TRITONLLM_JIT_BACKEND", raising=False)
    monkeypatch.setenv("TRITONLLM_CUBIN", "0")
    config = runtime_config()
    assert config.jit_backend == "triton" and config.use_cubins is False


def test_kernels_listing_command():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "tritonllm.kernels"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    for name in _registry():
        assert name in out
    assert "sm90:" in out and "tritonllm/kernels/moe.py" in out


def test_tuned_configurations_are_per_architecture():
    from tritonllm.kernels import tuning

    measured = json.loads(tuning.TUNING_FILE.read_text())["90"]
    assert tuning.config("moe_gemv", 90) == {k: measured["moe_gemv"][k] for k in tuning.DEFAULTS["moe_gemv"]}
    assert tuning.config("linear_gemv", 86) == tuning.DEFAULTS["linear_gemv"]  # not measured: the rule


DEPENDENT_KERNELS = (
    "linear_gemv_kernel", "moe_gemv_kernel", "moe_route_kernel", "attention_decode_kernel", "attention_combine_kernel",
    "qkv_rope_decode_kernel",
)


def test_decode_kernels_are_programmatic_dependent_launches_on_sm90_only():
    """The decode step's kernels call wait_for_inputs, so on sm90 their cubins are built and
    launched as programmatic dependents (they may start while the previous kernel ends); no
    other kernel, and no architecture without griddepcontrol, may be launched that way."""
    manifest = read_manifest(DEFAULT_CUBIN_DIR)
    for arch in ARCHS:
        for entry in manifest["archs"][str(arch)]:
            key = key_from_json(entry["key"])
            binary = Binary.for_key(entry["kernel"], None, entry, key)
            expected = arch >= 90 and entry["kernel"] in DEPENDENT_KERNELS
            assert binary.dependent == expected, (arch, entry["kernel"])
            pdl_flag = [value for (ty, value) in key[0] if ty == "constexpr"][-1]
            if entry["kernel"] in DEPENDENT_KERNELS:
                assert pdl_flag == expected  # the kernel waits exactly when launched as a dependent
