"""H100 check of the cubin runtime (issue 3), one phase per process so each starts clean.

    python tools/cubin_check.py --out results.json

Phases (each a fresh subprocess with an empty TRITON_CACHE_DIR):
- cubin: prepare the runtime from cubins, warm the 20b model (prefill + CUDA-graph decode),
  time start-to-kernels-ready (weight building excluded), logits of a fixed prompt, and
  whether anything was compiled (the Triton cache must stay empty).
- jit / triton_runner: the same with TRITONLLM_CUBIN=0 and each JIT backend.
- launch overhead: host time per launch of a small kernel, cubin vs JIT.
- fallback: the tiny model's kernels (head_dim 16) have no cubins: the summary says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def phase(name: str, size: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from tritonllm import LLM
    from tritonllm.env import runtime_config
    from tritonllm.model.config import preset
    from tritonllm.model.synthetic import synthetic_weights
    from tritonllm.runtime.cubin import CubinLibrary

    weights = synthetic_weights(preset(size), 0, torch.device("cuda"))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    llm = LLM(weights, context_length=4096, runtime_config=runtime_config())
    prepared = time.perf_counter() - t0
    prompt = list(range(1000, 1064))
    list(llm.generate(prompt, 3, temperature=0))  # prefill + decode graph: every kernel launched once
    torch.cuda.synchronize()
    ready = time.perf_counter() - t0
    logits = llm.logits(prompt)
    tokens = list(llm.generate(prompt, 16, temperature=0))
    cache = Path(os.environ["TRITON_CACHE_DIR"])  # before the launch timing, which JIT-compiles too
    compiled_files = sum(1 for p in cache.rglob("*") if p.is_file())
    library = next(iter(__import__("tritonllm.runtime.settings", fromlist=["x"]).cubin_libraries.values()), None)
    out = {
        "phase": name,
        "prepare_s": prepared,
        "kernels_ready_s": ready,
        "plan": llm.kernel_plan.summary() if llm.kernel_plan else None,
        "launched_from_cubins": sorted(library.launched) if isinstance(library, CubinLibrary) else [],
        "fallbacks": library.fallbacks if isinstance(library, CubinLibrary) else {},
        "tokens": tokens,
        "triton_cache_files": compiled_files,
    }
    torch.save(logits.cpu(), os.environ["CHECK_LOGITS"])

    # Host time per launch of one small kernel: cubin and JIT alternately in this process (when
    # cubins are on), median of 7 rounds of 2000 launches each.
    from tritonllm.kernels.rmsnorm import Norm, rmsnorm
    from tritonllm.runtime import settings

    x = torch.randn(1, 2880, device="cuda")
    norm = Norm(torch.ones(2880, device="cuda"), 1e-5)
    library = settings.cubin_libraries.get(torch.cuda.current_device())
    paths = {"cubin": library, "jit": None} if library is not None else {"jit": None}
    samples = {name: [] for name in paths}
    for _ in range(7):
        for name, lib in paths.items():
            settings.cubin_libraries[torch.cuda.current_device()] = lib
            for _ in range(50):
                rmsnorm(x, norm)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(2000):
                rmsnorm(x, norm)
            samples[name].append((time.perf_counter() - t) / 2000 * 1e6)
            torch.cuda.synchronize()
    settings.cubin_libraries[torch.cuda.current_device()] = library
    out["host_us_per_launch"] = {name: sorted(v)[len(v) // 2] for name, v in samples.items()}
    return out


def run_phase(name: str, size: str, env: dict, workdir: Path) -> dict:
    cache = workdir / f"cache-{name}"
    cache.mkdir()
    logits = workdir / f"logits-{name}.pt"
    env = {**os.environ, **env, "TRITON_CACHE_DIR": str(cache), "CHECK_LOGITS": str(logits)}
    proc = subprocess.run([sys.executable, __file__, "--phase", name, "--size", size], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        return {"phase": name, "error": proc.stderr[-3000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["log"] = [line for line in proc.stderr.splitlines() if "kernels on" in line or "no sm" in line][:20]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase")
    p.add_argument("--size", default="20b")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.phase:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        print(json.dumps(phase(args.phase, args.size)))
        return
    import torch

    results = {"device": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = {
            "cubin": run_phase("cubin", args.size, {"TRITONLLM_CUBIN": "1"}, work),
            "jit_triton": run_phase("jit_triton", args.size, {"TRITONLLM_CUBIN": "0", "TRITONLLM_JIT_BACKEND": "triton"}, work),
            "jit_triton_runner": run_phase("jit_triton_runner", args.size,
                                           {"TRITONLLM_CUBIN": "0", "TRITONLLM_JIT_BACKEND": "triton_runner"}, work),
            "fallback_tiny": run_phase("fallback_tiny", "tiny", {"TRITONLLM_CUBIN": "1"}, work),
        }
        ref = torch.load(work / "logits-jit_triton.pt") if (work / "logits-jit_triton.pt").exists() else None
        for name in ("cubin", "jit_triton_runner"):
            path = work / f"logits-{name}.pt"
            if ref is not None and path.exists():
                other = torch.load(path)
                runs[name]["logits_max_abs_diff_vs_jit"] = (other - ref).abs().max().item()
                runs[name]["tokens_equal_jit"] = runs[name].get("tokens") == runs["jit_triton"].get("tokens")
    results["runs"] = runs
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
