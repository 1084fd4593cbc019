"""Write `o200k_base.tiktoken`, the vocabulary harmony needs, without internet access.

openai_harmony downloads this file on first use unless the environment variable
TIKTOKEN_ENCODINGS_BASE names a folder that holds it. On machines without internet
(CI, air-gapped GPU boxes) this script rebuilds it from the tokenizer tables shipped in the
PyPI package `quicktok-v1` and checks it against the published SHA-256, so the result is
byte-identical to the official download.

    pip install quicktok-v1
    python tools/make_encoding.py ~/.cache/tritonllm/encodings
    export TIKTOKEN_ENCODINGS_BASE=~/.cache/tritonllm/encodings
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import sys
import tempfile
from pathlib import Path

FILE_NAME = "o200k_base.tiktoken"
SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_SIZE = 199998  # ordinary (non-special) tokens of o200k_base: ranks 0..199997


def encoding_bytes() -> bytes:
    """The file's content: one `base64(token bytes) rank` line per rank."""
    try:
        import quicktok
    except ImportError:
        raise SystemExit("make_encoding: the package quicktok-v1 is missing: pip install quicktok-v1") from None
    enc = quicktok.get_encoding("o200k_base")
    lines = (
        f"{base64.b64encode(enc.decode_single_token_bytes(rank)).decode('ascii')} {rank}\n"
        for rank in range(VOCAB_SIZE)
    )
    return "".join(lines).encode("ascii")


def write_encoding(out_dir: str | Path) -> Path:
    """Write FILE_NAME into `out_dir` (created if needed) after checking its hash; return its path.

    The file is written to a temporary name and renamed, so a concurrent reader never sees
    half a file and a hash mismatch leaves nothing behind.
    """
    data = encoding_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(
            f"make_encoding: the rebuilt {FILE_NAME} has SHA-256 {digest}, expected {SHA256}; "
            "this quicktok-v1 version's o200k_base table differs from the official one"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{FILE_NAME}.", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / FILE_NAME)
    return out / FILE_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=f"Rebuild {FILE_NAME} offline (from quicktok-v1) for openai_harmony; "
        "then point TIKTOKEN_ENCODINGS_BASE at OUT_DIR."
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the file into (created if missing)")
    path = write_encoding(parser.parse_args(argv).out_dir)
    print(f"wrote {path} (sha256 {SHA256}); now: export TIKTOKEN_ENCODINGS_BASE={path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
