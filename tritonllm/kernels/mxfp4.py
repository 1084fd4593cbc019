"""MXFP4 decoding inside kernels: E2M1 values (packed two per byte, low nibble first) and E8M0
block scales (one per 32 values) to exact float32 or bf16.

- float32, for the decode GEMVs' FMAs and the interpreter: `e2m1_halves` (bytes) and `e2m1_pair`
  (int32 words) go through the fp16 bit pattern (value times 2^-14; the conversion to float32 is
  exact), `block_scale` gives 2^(code - 127) with the 2^14 folded in.
- bf16, for the tensor-core tiles: `e2m1_to_bf16`, in PTX.
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
def e2m1_pair(w, MAG_SHIFT: tl.constexpr, SIGN_SHIFT: tl.constexpr):
    """Two FP4 values of int32 words w (one per 16-bit half, the nibbles whose magnitude bits
    move to 9..11 by a left shift of MAG_SHIFT and whose sign moves to 15 by SIGN_SHIFT) ->
    both as float32 times 2^-14, through an fp16x2 bit pattern (see `e2m1_halves`): the
    integer ops place two values at once."""
    if MAG_SHIFT >= 0:
        mag = (w << MAG_SHIFT) & 0x0E000E00
    else:
        mag = (w >> -MAG_SHIFT) & 0x0E000E00
    p = mag | ((w << SIGN_SHIFT) & -2147450880)  # 0x80008000 as int32
    return fp16_bits_to_f32(p), fp16_bits_to_f32(p >> 16)


@triton.jit
def fp16_bits_to_f32(p):
    """int32 holding an fp16 bit pattern in its low 16 bits -> float32 (exact)."""
    return p.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def block_scale(code):
    """E8M0 scale codes -> 2^(code - 127) * 2^14 (the factor `e2m1_halves` leaves out), built
    from the exponent bits; exact for codes <= 240 (checked at load: larger is not a weight)."""
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
