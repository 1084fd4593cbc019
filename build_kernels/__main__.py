"""python -m build_kernels: compile every kernel launch of gpt-oss-20b / -120b into cubins.

    python -m build_kernels                  # all architectures, all kernels -> cubins/
    python -m build_kernels --arch 90 --kernel linear_kernel
    python -m build_kernels --check          # is cubins/ up to date with the sources? (no compiling)
    python -m build_kernels --tune           # on a GPU: measure tiles, record winners for its arch
    python -m build_kernels --tune --kernel moe_gemv_kernel    # only that kernel's tiles

Writes cubins/sm<arch>/<kernel>-<id>.cubin and cubins/manifest.json (Triton version, source
hash per kernel, and per architecture each binary's specialization key and launch metadata).
Same sources give byte-identical outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import triton

from build_kernels.trace import trace
from tritonllm.runtime.cubin import MANIFEST, compile_spec, key_to_json
from tritonllm.runtime.settings import DEFAULT_CUBIN_DIR
from tritonllm.runtime.target import ARCHS, MAX_SHARED

_jobs: list = []  # (arch, kernel, key, args, kwargs), inherited by forked workers


def _entry_id(kernel, key) -> str:
    text = json.dumps([kernel.source_hash, key_to_json(key)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _compile(index: int) -> tuple[bytes, dict]:
    arch, kernel, _, args, kwargs = _jobs[index]
    compiled = compile_spec(kernel, arch, args, kwargs)
    m = compiled.metadata
    if m.shared > MAX_SHARED[arch]:
        raise RuntimeError(f"{kernel.name} needs {m.shared} bytes of shared memory; sm{arch} has {MAX_SHARED[arch]}")
    meta = {"name": m.name, "num_warps": m.num_warps, "num_stages": m.num_stages, "shared": m.shared,
            "global_scratch": m.global_scratch_size, "num_ctas": m.num_ctas}
    return compiled.asm["cubin"], meta


def expected(archs, kernels) -> dict:
    """{arch: {(kernel, key): (kernel object, args, kwargs)}} for the selection."""
    out = {}
    for arch in archs:
        launches = trace(arch)
        out[arch] = {k: v for k, v in launches.items() if not kernels or k[0] in kernels}
    return out


def check(cubin_dir: Path) -> list[str]:
    """Problems that make cubin_dir out of date with the kernel sources and the registry."""
    path = cubin_dir / MANIFEST
    if not path.is_file():
        return [f"{path} is missing: run python -m build_kernels"]
    manifest = json.loads(path.read_text())
    problems = []
    if manifest["triton"] != triton.__version__:
        problems.append(f"built with triton {manifest['triton']}, this is {triton.__version__}")
    for arch, launches in expected(ARCHS, ()).items():
        entries = {(e["kernel"], json.dumps(e["key"])): e for e in manifest["archs"].get(str(arch), [])}
        want = {(name, json.dumps(key_to_json(key))) for name, key in launches}
        for name, key in sorted(want - set(entries)):
            problems.append(f"sm{arch}: {name} has no cubin for a launch the engine makes")
        for name, key in sorted(set(entries) - want):
            problems.append(f"sm{arch}: {name} has a cubin no launch uses")
        for (name, _), entry in entries.items():
            if not (cubin_dir / entry["file"]).is_file():
                problems.append(f"sm{arch}: {entry['file']} is missing")
        for name, (kernel, _, _) in {n: v for (n, _), v in launches.items()}.items():
            if manifest["sources"].get(name) != kernel.source_hash:
                problems.append(f"{name}: source changed since its cubins were built")
    return sorted(set(problems))


def build(cubin_dir: Path, archs, kernels, jobs: int) -> None:
    manifest_path = cubin_dir / MANIFEST
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"sources": {}, "archs": {}}
    if old.get("triton") not in (None, triton.__version__):
        old = {"sources": {}, "archs": {}}  # a new compiler invalidates every binary
    todo = expected(archs, kernels)
    _jobs.clear()
    for arch in archs:
        for (name, key), (kernel, args, kwargs) in sorted(todo[arch].items(), key=lambda kv: _entry_id(kv[1][0], kv[0][1])):
            _jobs.append((arch, kernel, key, args, kwargs))
    print(f"compiling {len(_jobs)} kernel specializations for {', '.join(f'sm{a}' for a in archs)}", flush=True)
    start = time.time()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = []
        for i, result in enumerate(pool.map(_compile, range(len(_jobs)))):
            results.append(result)
            arch, kernel = _jobs[i][:2]
            print(f"[{i + 1}/{len(_jobs)}] sm{arch} {kernel.name} ({time.time() - start:.0f} s)", flush=True)

    sources = dict(old["sources"])
    archs_out = {a: list(v) for a, v in old["archs"].items()}
    for arch in archs:
        keep = [e for e in archs_out.get(str(arch), []) if kernels and e["kernel"] not in kernels]
        archs_out[str(arch)] = keep
        (cubin_dir / f"sm{arch}").mkdir(parents=True, exist_ok=True)
    for (arch, kernel, key, _, _), (image, meta) in zip(_jobs, results):
        file = f"sm{arch}/{kernel.name}-{_entry_id(kernel, key)}.cubin"
        (cubin_dir / file).write_bytes(image)
        archs_out[str(arch)].append({"kernel": kernel.name, "key": key_to_json(key), "file": file, **meta,
                                     "sha256": hashlib.sha256(image).hexdigest()})
        sources[kernel.name] = kernel.source_hash
    for arch in archs_out:
        archs_out[arch].sort(key=lambda e: e["file"])
        listed = {Path(e["file"]).name for e in archs_out[arch]}
        for stale in (cubin_dir / f"sm{arch}").glob("*.cubin"):
            if stale.name not in listed:
                stale.unlink()
    manifest = {"triton": triton.__version__, "archs": dict(sorted(archs_out.items(), key=lambda kv: int(kv[0]))),
                "sources": dict(sorted(sources.items()))}
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    print(f"wrote {len(results)} cubins and {manifest_path} in {time.time() - start:.0f} s")


def main(argv=None) -> int:
    # Shipped binaries carry no line tables (a third of the size); kernel work uses JIT.
    os.environ["TRITON_DISABLE_LINE_INFO"] = "1"
    p = argparse.ArgumentParser(prog="python -m build_kernels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, action="append", choices=ARCHS, help="only this architecture (repeatable)")
    p.add_argument("--kernel", action="append", help="only this kernel (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_CUBIN_DIR, help="cubin folder (default: cubins/)")
    p.add_argument("--jobs", type=int, default=2, help="parallel compiler processes")
    p.add_argument("--check", action="store_true", help="report whether the cubins are up to date; build nothing")
    p.add_argument("--tune", type=Path, metavar="REPORT.json", nargs="?", const=Path("tuning-report.json"),
                   help="on a GPU: measure the tuned kernels' tiles, record the winners in "
                        "tritonllm/kernels/tuning.json, write every measurement to REPORT.json")
    args = p.parse_args(argv)
    if args.tune:
        from build_kernels.tune import tune

        args.tune.write_text(json.dumps(tune(tuple(args.kernel or ())), indent=1) + "\n")
        print(f"measurements in {args.tune}; now rebuild: python -m build_kernels")
        return 0
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(problem)
        print("cubins are up to date" if not problems else f"{len(problems)} problems: run python -m build_kernels")
        return 1 if problems else 0
    from tritonllm.runtime.kernel import REGISTRY

    import tritonllm.kernels.all  # noqa: F401

    unknown = set(args.kernel or ()) - set(REGISTRY)
    if unknown:
        p.error(f"unknown kernel(s) {sorted(unknown)}; known: {', '.join(sorted(REGISTRY))}")
    build(args.out, tuple(args.arch or ARCHS), tuple(args.kernel or ()), args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
