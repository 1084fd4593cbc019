"""Attention with per-head learned sinks, GQA, causal mask and optional sliding window.

Keys and values come from the layer's KV cache [rows, KVH, D], position p at row p % rows:
a full layer keeps the context (rows = ctx), a sliding layer a ring of its last
rows = min(window, ctx) positions (see kernels.rope). Each program takes all G = NH / KVH
query heads of one kv head, so K and V tiles are loaded once per group. Softmax runs online
in base 2; the sink is one more logit with a zero value vector, so it seeds the running max
and denominator (prefill) or joins in the combine (decode).

- prefill: queries at positions pos0 .. pos0+T-1 (T >= 1), flash-attention style; keys
  before pos0 from the cache, the chunk's own keys from its k and v (the cache gets them
  after attention, from kv_store). A short chunk after a long cache (a chat's next turn)
  splits the cached keys over programs too, merged as decode's are.
- decode: one query whose position is read on the device (CUDA-graph friendly); its key is
  already in the cache. The keys are split into fixed chunks across programs, then a
  combine kernel merges the partials. (Merging in the last split of each kv head instead,
  found by an atomic count, was measured slower on the H100: 19.0 against 13.2 us per
  layer at 4k context: one program per kv head merged 32 splits serially.) A cache of one
  chunk (a sliding window's ring) takes one program per kv head, which finishes the softmax
  itself: no combine.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from tritonllm.kernels.common import (
    LOG2E, cdiv, check, dependent_launch_args, dot, dot_f32, next_pow2, on_gpu, prefetch_l2, store_split,
    wait_for_inputs,
)
from tritonllm.runtime.kernel import kernel
from tritonllm.runtime.target import CPU, arch_of, small_shared_memory


@triton.jit
def _attend_block(q, k_ptr, v_ptr, kv_offs, k_ok, valid, m_i, l_i, acc, qk_scale, F32: tl.constexpr):
    """One online-softmax step over a block of keys: scores of q [M, D] against the keys at
    kv_offs [BN, D], masked to `valid` ([M, BN] or broadcastable), folded into the running (max, sum, acc)."""
    k = tl.load(k_ptr + kv_offs, mask=k_ok[:, None], other=0.0)  # [BN, D]
    s = dot(q, tl.trans(k), tl.zeros([q.shape[0], k.shape[0]], dtype=tl.float32), F32) * qk_scale
    s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    v = tl.load(v_ptr + kv_offs, mask=k_ok[:, None], other=0.0)
    acc = dot(p.to(v.dtype), v, acc * alpha[:, None], F32)
    return m_new, l_i, acc


@kernel(dynamic=("T", "pos0", "rows", "split_keys"))
def attention_prefill_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, k_ptr, v_ptr, sinks_ptr, out_ptr, out_lo_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    T, pos0, rows, split_keys, qk_scale, window, NH, KVH,
    G: tl.constexpr, D: tl.constexpr, BT: tl.constexpr, BN: tl.constexpr, F32: tl.constexpr, SPLIT: tl.constexpr,
):
    """Grid (query tiles, kv heads, key splits). With one split a program attends all its keys
    and stores the output (SPLIT: as the bf16 hi (out_ptr) + lo (out_lo_ptr) parts the output
    projection multiplies, see common.store_split). With several, split s attends the cached
    keys s * split_keys.. (the last split also the chunk's own keys) and stores its partial
    (max, sum, acc) for attention_combine_kernel, which adds the sink."""
    pid_t, kvh, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_splits = tl.num_programs(2)
    BM: tl.constexpr = BT * G  # rows = (query token, head in group)
    r = tl.arange(0, BM)
    tq = pid_t * BT + r // G
    head = kvh * G + r % G
    row_ok = tq < T
    q_pos = pos0 + tq
    d = tl.arange(0, D)
    q = tl.load(q_ptr + ((tq * NH + head) * D)[:, None] + d[None, :], mask=row_ok[:, None], other=0.0)  # [BM, D]

    # The sink logit (base 2) seeds the running max and sum, unless the merge adds it.
    alone = n_splits == 1
    m_i = tl.where(alone, tl.load(sinks_ptr + head).to(tl.float32) * LOG2E, float("-inf"))
    l_i = tl.where(alone, tl.full([BM], 1.0, tl.float32), 0.0)
    acc = tl.zeros([BM, D], dtype=tl.float32)

    first_q = pos0 + pid_t * BT
    hi = tl.minimum(first_q + BT, pos0 + T)  # keys [lo, hi)
    lo = tl.where(window > 0, tl.maximum(first_q - window + 1, 0) // BN * BN, 0)
    kn = tl.arange(0, BN)
    # This split's keys before the chunk, from the cache at row p % rows. A ring row below the
    # window holds a later position; the mask, on positions, drops it.
    cache_lo = lo + s * split_keys
    cache_hi = tl.minimum(cache_lo + split_keys, pos0)
    for start in range(cache_lo, cache_hi, BN):
        kp = start + kn
        k_ok = kp < cache_hi
        kv_offs = (((kp % rows) * KVH + kvh) * D)[:, None] + d[None, :]
        valid = k_ok[None, :] & ((window == 0) | (kp[None, :] > q_pos[:, None] - window))
        m_i, l_i, acc = _attend_block(q, k_cache_ptr, v_cache_ptr, kv_offs, k_ok, valid, m_i, l_i, acc, qk_scale, F32)
    # The chunk's own keys, row p - pos0 of k and v: the last split's.
    own_hi = tl.where(s == n_splits - 1, hi, 0)
    for start in range(tl.maximum(lo, pos0), own_hi, BN):
        kp = start + kn
        k_ok = kp < hi
        kv_offs = (((kp - pos0) * KVH + kvh) * D)[:, None] + d[None, :]
        valid = (kp[None, :] <= q_pos[:, None]) & k_ok[None, :]
        valid = valid & ((window == 0) | (kp[None, :] > q_pos[:, None] - window))
        m_i, l_i, acc = _attend_block(q, k_ptr, v_ptr, kv_offs, k_ok, valid, m_i, l_i, acc, qk_scale, F32)
    if alone:
        out = acc / l_i[:, None]
        offs = ((tq * NH + head) * D)[:, None] + d[None, :]
        if SPLIT:
            store_split(out_ptr, out_lo_ptr, offs, out, row_ok[:, None])
        else:
            tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    else:
        part = s * T * NH + tq * NH + head  # [splits, T, NH], the layout attention_combine reads
        tl.store(part_m_ptr + part, m_i, mask=row_ok)
        tl.store(part_l_ptr + part, l_i, mask=row_ok)
        tl.store(part_acc_ptr + (part * D)[:, None] + d[None, :], acc, mask=row_ok[:, None])


@kernel(dynamic=("rows",))
def attention_decode_kernel(
    q_ptr, k_ptr, v_ptr, pos_ptr, sinks_ptr, out_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    rows, qk_scale, window, NH, KVH,
    G: tl.constexpr, BG: tl.constexpr, D: tl.constexpr, SPLIT: tl.constexpr, BN: tl.constexpr, F32: tl.constexpr,
    FINAL: tl.constexpr, PDL: tl.constexpr,
):
    """Grid (kv heads, splits): program (kvh, s) attends the G query heads of kv head kvh to
    keys s*SPLIT.. of the query's range and stores its partial (max, sum, acc). FINAL (one
    split): the sink seeds the softmax, as in prefill, and the program stores the output.

    PDL (see `wait_for_inputs`): the position was written by the previous step's sampler, long
    done, so the program finds its keys and asks L2 for its first block of them before waiting
    for the kernel that wrote this token's k and v (L2 serves that write to the loads after the
    wait; H100: +0.5-0.9% decode)."""
    kvh, split = tl.program_id(0), tl.program_id(1)
    pos = tl.load(pos_ptr)  # the query's position: keys [first, pos], at most `rows` of them
    first = tl.where(window > 0, tl.maximum(pos - window + 1, 0), 0)
    lo = first + split * SPLIT
    hi = tl.minimum(lo + SPLIT, pos + 1)
    if PDL:  # one prefetch per 128-byte line of the first block's K and V rows
        kp = lo + tl.arange(0, BN)
        lines = (((kp % rows) * KVH + kvh) * D)[:, None] + (tl.arange(0, D // 32) * 32)[None, :]
        prefetch_l2(k_ptr + lines, (kp < hi)[:, None])
        prefetch_l2(v_ptr + lines, (kp < hi)[:, None])
    wait_for_inputs(PDL)
    g = tl.arange(0, BG)
    g_ok = g < G  # BG >= 16 rows for tl.dot; extra rows are padding
    head = kvh * G + g
    d = tl.arange(0, D)
    q = tl.load(q_ptr + (head * D)[:, None] + d[None, :], mask=g_ok[:, None], other=0.0)  # [BG, D]
    if FINAL:
        m_i = tl.load(sinks_ptr + head, mask=g_ok, other=0.0).to(tl.float32) * LOG2E
        l_i = tl.full([BG], 1.0, tl.float32)
    else:
        m_i = tl.full([BG], float("-inf"), tl.float32)
        l_i = tl.zeros([BG], dtype=tl.float32)
    acc = tl.zeros([BG, D], dtype=tl.float32)
    kn = tl.arange(0, BN)
    for start in range(lo, hi, BN):
        kp = start + kn
        k_ok = kp < hi
        kv_offs = (((kp % rows) * KVH + kvh) * D)[:, None] + d[None, :]
        m_i, l_i, acc = _attend_block(q, k_ptr, v_ptr, kv_offs, k_ok, k_ok[None, :], m_i, l_i, acc, qk_scale, F32)
    if FINAL:
        tl.store(out_ptr + (head * D)[:, None] + d[None, :], acc / l_i[:, None], mask=g_ok[:, None])
    else:
        part = split * NH + head  # [BG]
        tl.store(part_m_ptr + part, m_i, mask=g_ok)
        tl.store(part_l_ptr + part, l_i, mask=g_ok)
        tl.store(part_acc_ptr + (part * D)[:, None] + d[None, :], acc, mask=g_ok[:, None])


@kernel(dynamic=("n_splits", "R"))
def attention_combine_kernel(
    part_m_ptr, part_l_ptr, part_acc_ptr, sinks_ptr, out_ptr, out_lo_ptr, n_splits, R, NH,
    D: tl.constexpr, BH: tl.constexpr, BS: tl.constexpr, SPLIT: tl.constexpr, PDL: tl.constexpr,
):
    """BH of the R (query, head) rows per program (decode: R = NH): the softmax-weighted merge
    of their n_splits partials [n_splits, R]. SPLIT: the output as bf16 hi + lo parts."""
    wait_for_inputs(PDL)
    row = tl.program_id(0) * BH + tl.arange(0, BH)
    ok = row < R
    d = tl.arange(0, D)
    out = _merge_splits(part_m_ptr, part_l_ptr, part_acc_ptr, sinks_ptr, row, ok, n_splits, R, NH, D, BS)
    offs = (row * D)[:, None] + d[None, :]
    if SPLIT:
        store_split(out_ptr, out_lo_ptr, offs, out, ok[:, None])
    else:
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=ok[:, None])


@triton.jit
def _merge_splits(part_m_ptr, part_l_ptr, part_acc_ptr, sinks_ptr, row, ok, n_splits, R, NH, D: tl.constexpr,
                  BS: tl.constexpr):
    """Softmax-weighted merge of n_splits partials of the rows `row` [BH] (of R; head row % NH),
    BS splits at a time (one step for up to BS splits), with the sink as one more logit of zero
    value. Returns the attention output [BH, D]."""
    m_all = tl.load(sinks_ptr + row % NH, mask=ok, other=0.0).to(tl.float32) * LOG2E
    l_all = tl.full(m_all.shape, 1.0, tl.float32)  # the sink's exp2(sink - m_all)
    acc = tl.zeros([row.shape[0], D], dtype=tl.float32)
    s_in = tl.arange(0, BS)
    d = tl.arange(0, D)
    for s0 in range(0, n_splits, BS):
        s_ok = ((s0 + s_in) < n_splits)[:, None] & ok[None, :]
        part = (s0 + s_in)[:, None] * R + row[None, :]  # [BS, BH]
        m = tl.load(part_m_ptr + part, mask=s_ok, other=float("-inf"))
        l = tl.load(part_l_ptr + part, mask=s_ok, other=0.0)
        pacc = tl.load(part_acc_ptr + (part * D)[:, :, None] + d[None, None, :], mask=s_ok[:, :, None], other=0.0)
        # [BS, BH, D]
        m_new = tl.maximum(m_all, tl.max(m, axis=0))  # finite: the sink is
        alpha = tl.exp2(m_all - m_new)
        w = tl.exp2(m - m_new[None, :])  # [BS, BH]; 0 for splits without keys (m = -inf)
        l_all = l_all * alpha + tl.sum(l * w, axis=0)
        acc = acc * alpha[:, None] + tl.sum(pacc * w[:, :, None], axis=0)
        m_all = m_new
    return acc / l_all[:, None]


def _check_common(q, k_cache, v_cache, sinks):
    check(q.dim() == 3 and q.is_contiguous(), "attention: q must be a contiguous [T, NH, D] tensor")
    check(k_cache.dim() == 3 and k_cache.shape == v_cache.shape, "attention: caches must be [rows, KVH, D]")
    check(k_cache.is_contiguous() and v_cache.is_contiguous(), "attention: caches must be contiguous")
    NH, D = q.shape[1], q.shape[2]
    KVH = k_cache.shape[1]
    check(k_cache.shape[2] == D and NH % KVH == 0 and sinks.shape == (NH,), "attention: head shapes disagree")
    G = NH // KVH
    check(G & (G - 1) == 0 and D & (D - 1) == 0, "attention: heads per kv head and head_dim must be powers of two")
    return NH, KVH, D, G


def attention_prefill(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
    sinks: torch.Tensor, pos0: int, sm_scale: float, window: int = 0, split: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """q [T, NH, D] at positions pos0..; the chunk's own keys and values k_new/v_new [T, KVH, D];
    the caches [rows, KVH, D] hold positions before pos0 at row p % rows (all of them, or for
    a sliding window at least its last min(window, pos0)); sinks [NH] float32; window 0 = full
    causal. Returns [T, NH, D] in q's dtype, or with `split` (q float32) its split_bf16 parts."""
    NH, KVH, D, G = _check_common(q, k_cache, v_cache, sinks)
    T = q.shape[0]
    rows = k_cache.shape[0]
    check(k_new.shape == (T, KVH, D) and v_new.shape == k_new.shape,
          f"attention_prefill: k_new/v_new must be [{T}, {KVH}, {D}]")
    check(k_new.is_contiguous() and v_new.is_contiguous(), "attention_prefill: k_new/v_new must be contiguous")
    check(pos0 <= rows or 0 < window <= rows,
          f"attention_prefill: a cache of {rows} rows lost positions before {pos0} that the queries see")
    check(not split or q.dtype == torch.float32, "attention_prefill: split needs float32 q")
    out = torch.empty_like(q, dtype=torch.bfloat16 if split else q.dtype)
    out_lo = torch.empty_like(out) if split else out
    gpu = on_gpu(q)
    if gpu:  # H100 at 2,048 tokens (note 23): 128 query rows for full layers, short key blocks for windows
        BT, BN = (max(1, 64 // G), 32) if window else (max(1, 128 // G), 64)
    else:
        BT, BN = max(1, 128 // G), 128
    tiles = cdiv(T, BT)
    # A ring's keys are few; a full layer's may be split.
    n_splits, split_keys = (1, max(pos0, 1)) if window else prefill_key_splits(tiles * KVH, pos0, BN, 4 if gpu else 1)
    parts = DecodeScratch.allocate_rows(n_splits, T * NH, D, q.device) if n_splits > 1 else None
    m, l, acc = (parts.m, parts.l, parts.acc) if parts else (sinks, sinks, sinks)  # unused; float32, as they are
    attention_prefill_kernel[(tiles, KVH, n_splits)](
        q, k_cache, v_cache, k_new, v_new, sinks, out, out_lo, m, l, acc, T, pos0, rows, split_keys,
        sm_scale * LOG2E.value, window, NH, KVH, G=G, D=D, BT=BT, BN=BN, F32=dot_f32(q), SPLIT=split, num_warps=4,
    )
    if parts:
        _combine(parts, n_splits, sinks, out, out_lo, split, gpu)
    return (out, out_lo) if split else out


def prefill_key_splits(programs: int, keys: int, block: int, min_blocks: int) -> tuple[int, int]:
    """(splits, keys per split in whole blocks) of a full layer's cached keys, for a short chunk
    after a long cache (a chat's next turn): 90 tokens after 4,000 ran 48 programs of 4,000 keys
    each, 0.26 ms per layer (H100). Splits until ~256 programs (two waves of 132 SMs), each split
    at least `min_blocks` key blocks; a long chunk fills the GPU without."""
    wanted = max(1, min(cdiv(256, programs), cdiv(keys, min_blocks * block)))
    if wanted == 1:
        return 1, max(keys, 1)
    split_keys = cdiv(cdiv(keys, wanted), block) * block
    return cdiv(keys, split_keys), split_keys


@dataclass
class DecodeScratch:
    """Partial results of attention over key splits: m, l [splits, rows], acc [splits, rows, D];
    a decode's rows are its NH heads, a split prefill's its T * NH (query, head) pairs."""

    m: torch.Tensor
    l: torch.Tensor
    acc: torch.Tensor

    @property
    def splits(self) -> int:
        return self.m.shape[0]

    @staticmethod
    def allocate(cache_rows: Iterable[int], num_heads: int, head_dim: int, device) -> "DecodeScratch":
        """Big enough for every cache of the given row counts."""
        on_cpu = torch.device(device).type == "cpu"
        return DecodeScratch.allocate_rows(max(decode_splits(rows, on_cpu) for rows in cache_rows), num_heads,
                                           head_dim, device)

    @staticmethod
    def allocate_rows(splits: int, rows: int, head_dim: int, device) -> "DecodeScratch":
        return DecodeScratch(
            torch.empty(splits, rows, dtype=torch.float32, device=device),
            torch.empty(splits, rows, dtype=torch.float32, device=device),
            torch.empty(splits, rows, head_dim, dtype=torch.float32, device=device),
        )


def decode_split(rows: int, on_cpu: bool) -> int:
    """Keys per decode program over a cache of `rows` rows (it attends at most that many keys):
    about 64 splits over a long context (H100, 4k context, decode + combine: 64 keys per split
    11.9 + 2.0 us per full layer, against 15.0 + 2.0 with 128), one over a cache of up to 128
    rows (a sliding window's ring), whose program finishes the softmax itself (`decode_tile`)."""
    if on_cpu:
        return 2048
    return 128 if rows <= 128 else max(64, min(1024, next_pow2(cdiv(rows, 64))))


def decode_tile(arch: int, final: bool) -> dict:
    """Keys per block and launch options of `attention_decode_kernel`. One split (a ring): one 128-key
    block with 8 warps, through the pipeliner's shared-memory stages even for one step (H100, 20b
    decode at 128 tokens, against two 64-key splits and a combine: 544 -> 556.7 tok/s with 3 stages,
    549.5 with 2, 543 loading into registers, 524.5 walking two 64-key blocks); 3 stages of K and V
    need 143 KB, so ~100 KB parts get 2. Split caches: 64-key blocks, 4 warps (note 25)."""
    if arch == CPU:
        return {"BN": 256, "num_warps": 4}
    if final:
        return {"BN": 128, "num_warps": 8, "num_stages": 2 if small_shared_memory(arch) else 3}
    return {"BN": 64, "num_warps": 4}


def decode_splits(rows: int, on_cpu: bool) -> int:
    """Programs per kv head (and partial results per head) of a decode over `rows` rows."""
    return cdiv(rows, decode_split(rows, on_cpu))


def attention_decode(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, sinks: torch.Tensor,
    pos: torch.Tensor, sm_scale: float, window: int = 0, out: torch.Tensor | None = None,
    scratch: DecodeScratch | None = None,
) -> torch.Tensor:
    """One query q [1, NH, D] at the position held in `pos` [1] int32 (on the device); the
    caches [rows, KVH, D] hold its keys max(0, pos - window + 1)..pos (all 0..pos if window
    is 0) at row p % rows. Returns [1, NH, D]. `scratch` = DecodeScratch.allocate(...) to reuse."""
    NH, KVH, D, G = _check_common(q, k_cache, v_cache, sinks)
    check(q.shape[0] == 1 and pos.numel() == 1, "attention_decode: one query at a time")
    rows = k_cache.shape[0]
    split = decode_split(rows, not on_gpu(q))
    n_splits = decode_splits(rows, not on_gpu(q))
    if scratch is None:
        scratch = DecodeScratch.allocate([rows], NH, D, q.device)
    check(scratch.splits >= n_splits, f"attention_decode: scratch for {scratch.splits} splits, {n_splits} needed")
    if out is None:
        out = torch.empty_like(q)
    final = n_splits == 1
    arch = arch_of(q)
    tile = decode_tile(arch, final)
    attention_decode_kernel[(KVH, n_splits)](
        q, k_cache, v_cache, pos, sinks, out, scratch.m, scratch.l, scratch.acc, rows, sm_scale * LOG2E.value, window,
        NH, KVH, G=G, BG=max(16, G), D=D, SPLIT=split, F32=dot_f32(q), FINAL=final, **tile,
        **dependent_launch_args(arch),
    )
    if not final:
        _combine(scratch, n_splits, sinks, out, out, False, on_gpu(q))
    return out


def _combine(parts: DecodeScratch, n_splits: int, sinks, out, out_lo, split: bool, gpu: bool) -> None:
    """Merge the first n_splits partials of every row into out ([rows, D] in memory). A
    programmatic dependent launch where the GPU has them (it waits for its inputs)."""
    R, D = parts.acc.shape[1], parts.acc.shape[2]
    NH = sinks.shape[0]
    if gpu:  # decode: one step over up to 64 splits for two heads per program; prefill: 8 rows x 8 splits
        BH, BS = (2, 64) if R == NH else (8, 8)
    else:  # whole rows, and blocks of 8 splits so the tests cover the merge loop
        BH, BS = min(next_pow2(R), 128), 8
    attention_combine_kernel[(cdiv(R, BH),)](
        parts.m, parts.l, parts.acc, sinks, out, out_lo, n_splits, R, NH, D=D, BH=BH, BS=BS, SPLIT=split,
        num_warps=4, **dependent_launch_args(arch_of(out)),
    )


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, pos0: int, sm_scale: float, window: int = 0
) -> torch.Tensor:
    """q [T, NH, D] at positions pos0.., k/v [S, KVH, D] at positions 0..S-1 -> [T, NH, D] fp32."""
    T, NH, _ = q.shape
    S, KVH, _ = k.shape
    G = NH // KVH
    k = k.float().repeat_interleave(G, dim=1)
    v = v.float().repeat_interleave(G, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * sm_scale
    qp = pos0 + torch.arange(T, device=q.device)[:, None]
    kp = torch.arange(S, device=q.device)[None, :]
    masked = kp > qp
    if window > 0:
        masked |= kp <= qp - window
    scores = scores.masked_fill(masked, float("-inf"))
    sink = sinks.float()[:, None, None].expand(NH, T, 1)
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    return torch.einsum("hqk,khd->qhd", probs, v)
