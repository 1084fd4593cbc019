"""Embedding gather: the residual stream starts as float32 rows of the bf16 table."""

import torch
import triton.language as tl

from tritonllm.kernels.common import cdiv, check
from tritonllm.runtime.kernel import kernel


@kernel
def embedding_kernel(tokens_ptr, table_ptr, out_ptr, H, BLOCK_H: tl.constexpr):
    t = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = cols < H
    token = tl.load(tokens_ptr + t).to(tl.int64)
    row = tl.load(table_ptr + token * H + cols, mask=mask)
    tl.store(out_ptr + t * H + cols, row.to(tl.float32), mask=mask)


def embedding(tokens: torch.Tensor, table: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [T] int32/int64, table [V, H] -> out [T, H] float32. Ids must be < V (checked by
    the caller, which holds them on the host)."""
    check(tokens.dim() == 1 and table.dim() == 2 and table.is_contiguous(), "embedding: bad shapes")
    T, H = tokens.shape[0], table.shape[1]
    if out is None:
        out = torch.empty(T, H, dtype=torch.float32, device=table.device)
    BLOCK_H = 1024
    embedding_kernel[(T, cdiv(H, BLOCK_H))](tokens, table, out, H, BLOCK_H=BLOCK_H)
    return out


def embedding_reference(tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    return table[tokens.long()].float()
