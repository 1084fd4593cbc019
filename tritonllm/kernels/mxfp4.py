"""MXFP4 decoding inside kernels: E2M1 values (packed two per byte, low nibble first) and E8M0
block scales (one per 32 values) to exact float32 or bf16.

- float32, for the interpreter: `e2m1_halves` (bytes) goes through the fp16 bit pattern (value
  times 2^-14; the conversion to float32 is exact), `block_scale` gives 2^(code - 127) with the
  2^14 folded in; `e2m1_word_values` decodes int32 words.
- bf16, for the tensor-core tiles: `e2m1_to_bf16`, in PTX; for the decode GEMV, `e2m1_mma`
  decodes int32 words straight into mma.m16n8k16 A fragments, the block scale folded in.
"""

import triton
import triton.language as tl


@triton.jit
def e2m1_halves(packed):
    """Packed FP4 bytes (uint8: value 2b in the low nibble, 2b+1 in the high) -> the two values
    as float32 times 2^-14, through the fp16 bit pattern: sign to bit 15, the 2 exponent + 1
    mantissa bits to bits 11..9 (E2M1's subnormal 0.5 lands on fp16's subnormal 2^-15); the
    fp16 -> fp32 conversion is exact. Callers fold the 2^14 into the block scale."""
    p = packed.to(tl.int32)
    lo = ((p << 12) & 0x8000) | ((p << 9) & 0x0E00)
    hi = ((p << 8) & 0x8000) | ((p << 5) & 0x0E00)
    return fp16_bits_to_f32(lo), fp16_bits_to_f32(hi)


@triton.jit
def fp16_bits_to_f32(p):
    """int32 holding an fp16 bit pattern in its low 16 bits -> float32 (exact)."""
    return p.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def block_scale(code):
    """E8M0 scale codes -> 2^(code - 127) * 2^14 (the factor `e2m1_halves` leaves out), built
    from the exponent bits; exact for codes <= 240 (the load refuses codes above 160)."""
    return ((code.to(tl.int32) + 14) << 23).to(tl.float32, bitcast=True)


def _nibbles_ptx(mask: str, multiplier: str, out: str, scale: str) -> str:
    """PTX: one nibble of the two bytes in `pair` -> their values times `scale`, a bf16x2 in `out`."""
    return f"""
    and.b32 nib, pair, {mask};
    mul.lo.u32 t, nib, {multiplier};
    and.b32 t, t, 0x81C081C0;
    fma.rn.bf16x2 t, t, two126, negzero;
    fma.rn.bf16x2 {out}, t, {scale}, negzero;"""


def _two_bytes_ptx(selector: str, lo_out: str, hi_out: str, scale: str) -> str:
    """PTX: two of the 4 packed bytes ($4), spread into the halves of `pair` -> their low- and
    high-nibble values."""
    return (f"\n    prmt.b32 pair, $4, 0, {selector};" + _nibbles_ptx("0x000F000F", "0x1040", lo_out, scale)
            + _nibbles_ptx("0x00F000F0", "0x104", hi_out, scale))


# Outputs $0, $1: the 4 low-nibble values; $2, $3: the 4 high-nibble ones; inputs $4: 4 packed
# bytes, $5, $6: their 4 bf16 scales.
_E2M1_TO_BF16_PTX = tl.constexpr(
    "{\n    .reg .b32 pair, nib, t, two126, negzero;\n    mov.b32 two126, 0x7E807E80;\n    mov.b32 negzero, 0x80008000;"
    + _two_bytes_ptx("0x4140", "$0", "$2", "$5") + _two_bytes_ptx("0x4342", "$1", "$3", "$6") + "\n}"
)


@triton.jit
def e2m1_to_bf16(packed, scale):
    """Packed FP4 bytes [.., n] and a bf16 scale per byte -> (low-nibble values, high-nibble
    values) times the scales, bf16 [.., n] each, exact. Tensor-core paths use this; it is about
    3 instructions per value where `e2m1_halves` and a float32 product cost 8 (note 21).

    PTX on 4 bytes at a time: a PRMT spreads two bytes into the halves of a word; for each half,
    nibble * 0x1040 (low nibble; * 0x104 for the high one) lays two shifted copies of it side by
    side without overlap, and the mask keeps the sign at bit 15 and the 2 exponent + 1 mantissa
    bits at bits 8..6: a bf16 equal to the FP4 value times 2^-126 (E2M1's subnormal 0.5 lands on
    bf16's subnormal 2^-127). Two exact bf16x2 products then apply 2^126 and the scale."""
    return tl.inline_asm_elementwise(
        _E2M1_TO_BF16_PTX, "=r,=r,=r,=r,r,r,r", [packed, scale], dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4,
    )


# The tensor-core GEMV's weights are decoded times 2^-GEMV_SHIFT and its input stored times
# 2^GEMV_SHIFT (products unchanged), so that a block's factor 2^(code - 127 + 126 - GEMV_SHIFT)
# is a normal bf16 for scale codes up to 160 (weights below 2^33) and the decoded weights are
# exact bf16 down to codes of 27 (below: |w| < 2^-100, flushed).
GEMV_SHIFT = 32
GEMV_MAX_SCALE_CODE = 128 + GEMV_SHIFT  # 2^(code - 1 - GEMV_SHIFT) stays below bf16's 2^128
GEMV_INPUT_SCALE = tl.constexpr(2.0**GEMV_SHIFT)
GEMV_WEIGHT_SCALE = tl.constexpr(2.0**-GEMV_SHIFT)
_FACTOR_BIAS = tl.constexpr(126 - GEMV_SHIFT)  # bf16 exponent bias 127, minus 1 for the 2^-126 of the decode


@triton.jit
def bf16_block_factor(code):
    """E8M0 scale codes -> the bf16x2 pattern (both halves) of 2^(code - 1 - GEMV_SHIFT):
    the product that turns `e2m1_mma`'s decoded nibbles (value * 2^-126) into value * scale *
    2^-GEMV_SHIFT."""
    f = (code.to(tl.int32) + _FACTOR_BIAS) << 7
    return f | (f << 16)


def _decode_ptx(out: str, word: str, mask: str, multiplier: str, factor: str) -> str:
    """PTX: the nibble pair of `word` under `mask` (values j and j + 4) -> bf16x2 `out`, scaled
    (see `e2m1_to_bf16` for the multiply that places the nibble's bits)."""
    return f"""
    and.b32 n, {word}, {mask};
    mul.lo.u32 t, n, {multiplier};
    and.b32 t, t, 0x81C081C0;
    fma.rn.bf16x2 {out}, t, {factor}, nz;"""


def _k16_ptx(lo: str, lo8: str, b0: str, b1: str, acc_in: str) -> str:
    """PTX: one mma.m16n8k16 of the word pair (`lo`: row r, `lo8`: row r + 8) whose low two nibble
    pairs (j = 0, 1) are A's k columns (2q, 2q + 1) and (2q + 8, 2q + 9)."""
    return (_decode_ptx("a0", lo, "0x000F000F", "0x1040", "$6") + _decode_ptx("a1", lo8, "0x000F000F", "0x1040", "$7")
            + _decode_ptx("a2", lo, "0x00F000F0", "0x104", "$6") + _decode_ptx("a3", lo8, "0x00F000F0", "0x104", "$7")
            + f"\n    mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{$0, $1, $2, $3}}, {{a0, a1, a2, a3}},"
            f" {{{b0}, {b1}}}, {acc_in};")


# Outputs $0..$3: the mma accumulator; inputs $4, $5: a word of rows r and r + 8, $6, $7: their
# `bf16_block_factor`s, $8..$11: the B words, $12..$15: the accumulator in.
_E2M1_MMA_PTX = tl.constexpr(
    "{\n    .reg .b32 n, t, nz, a0, a1, a2, a3, hi, hi8;\n    mov.b32 nz, 0x80008000;"
    + _k16_ptx("$4", "$5", "$8", "$9", "{$12, $13, $14, $15}")
    + "\n    shr.u32 hi, $4, 8;\n    shr.u32 hi8, $5, 8;"
    + _k16_ptx("hi", "hi8", "$10", "$11", "{$0, $1, $2, $3}") + "\n}"
)


@triton.jit
def e2m1_mma(w, w8, f, f8, b0, b1, b2, b3, c0, c1, c2, c3):
    """One int32 weight word (8 FP4 values) of rows r and r + 8 of an m16 tile, times the input,
    on the tensor cores: two mma.m16n8k16 (bf16 in, float32 accumulate), all arguments one value
    per thread (lane l: rows l // 4 and l // 4 + 8, B column l // 4, accumulator as mma's C).

    The word's nibble pairs (j, j + 4), j = 0..3, are the A registers (low half value j): pairs
    0, 1 the first k16's (k 2q.., 2q + 8..), pairs 2, 3 the second's, each decoded to bf16 times
    its row's block factor f / f8 (`bf16_block_factor`). b0..b3 are the same pairs of the input,
    bf16x2, as `store_gemv_input` lays them out."""
    return tl.inline_asm_elementwise(
        _E2M1_MMA_PTX, "=f,=f,=f,=f," + "r," * 8 + "f,f,f,f",
        [w, w8, f, f8, b0, b1, b2, b3, c0, c1, c2, c3],
        dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1,
    )


@triton.jit
def e2m1_word_values(w):
    """int32 words [L, n] -> their 8 FP4 values each, float32 [L, n, 8] (value i: nibble i),
    exact; the interpreter's stand-in for `e2m1_mma`'s decode."""
    nib = (w[:, :, None] >> (4 * tl.arange(0, 8))[None, None, :]) & 15
    e, m = (nib >> 1) & 3, (nib & 1).to(tl.float32)
    mag = tl.where(e == 0, 0.5 * m, (1.0 + 0.5 * m) * tl.where(e == 1, 1.0, tl.where(e == 2, 2.0, 4.0)))
    return tl.where(nib >= 8, -mag, mag)
