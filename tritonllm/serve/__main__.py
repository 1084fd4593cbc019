"""`python -m tritonllm.serve [MODEL]`: serve gpt-oss over OpenAI's HTTP APIs.

Parses options, loads the tokenizer and the tools, and runs uvicorn; the model loads in the
background on the engine's worker thread (`GET /ready` answers 200 once it is in memory).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tritonllm.chat import _positive_int, _use_interpreter

log = logging.getLogger("tritonllm.serve")

EPILOG = """\
examples:
  python -m tritonllm.serve                          # gpt-oss-20b on 127.0.0.1:8000
  python -m tritonllm.serve /models/gpt-oss-120b --host 0.0.0.0 --api-key "$KEY" -b -p
  python -m tritonllm.serve ./tiny --device cpu -c 512   # a tiny test checkpoint on the CPU

environment:
  TRITONLLM_API_KEY        the API key, when --api-key is not given
  TIKTOKEN_ENCODINGS_BASE  folder holding o200k_base.tiktoken (offline tokenizer)
  EXA_API_KEY, YDC_API_KEY web search for --browser (Exa or You.com)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tritonllm.serve",
        description="Serve gpt-oss through OpenAI's Responses and Chat Completions APIs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", nargs="?", default="20b",
                   help="checkpoint folder, or 20b / 120b to download (default: 20b)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("-c", "--context", type=_positive_int, default=8192, help="context length in tokens (default: 8192)")
    p.add_argument("-r", "--reasoning", choices=("low", "medium", "high"), default="medium",
                   help="reasoning effort when a request does not say (default: medium)")
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu to run Triton's interpreter (tiny models)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/* (default: $TRITONLLM_API_KEY)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait while one generates; more get 429 (default: 64)")
    p.add_argument("--max-stored-responses", type=_positive_int, default=1024,
                   help="responses kept for previous_response_id, oldest dropped (default: 1024)")
    p.add_argument("--served-model-name", help="the model id clients use (default: gpt-oss-20b, gpt-oss-120b or "
                   "the checkpoint folder's name)")
    p.add_argument("-b", "--browser", action="store_true", help="offer the browser tool (web_search_preview)")
    p.add_argument("-p", "--python", action="store_true", help="offer the python tool (code_interpreter), sandboxed")
    p.add_argument("--source", choices=("modelscope", "hf"), default="modelscope",
                   help="where 20b / 120b are downloaded from (default: modelscope)")
    p.add_argument("--cache-dir", metavar="DIR", help="where downloaded checkpoints are kept")
    p.add_argument("--offline", action="store_true", help="only use an already downloaded checkpoint")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (debug level)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.max_queue < 0:
        log.error("--max-queue must be >= 0")
        return 2
    if args.device.startswith("cpu"):
        _use_interpreter()

    import uvicorn

    from tritonllm.harmony import EncodingUnavailable, load_encoding
    from tritonllm.serve import Backend, ServerConfig, create_app

    try:
        encoding = load_encoding()
    except EncodingUnavailable as e:
        log.error("%s", e)
        return 1
    api_key = args.api_key or os.environ.get("TRITONLLM_API_KEY") or None
    config = ServerConfig(
        encoding=encoding,
        model_name=args.served_model_name or _model_name(args.model),
        context_length=args.context,
        reasoning_effort=args.reasoning,
        api_key=api_key,
        max_stored_responses=args.max_stored_responses,
        builtin_tools=_builtin_tools(args),
    )
    if not api_key and args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s without an API key: anyone who can reach it may use the model", args.host)
    app = create_app(Backend(lambda: _load(args), args.max_queue), config)
    uvicorn.run(app, host=args.host, port=args.port, log_level="debug" if args.verbose else "info", access_log=False)
    return 0


def _model_name(model: str) -> str:
    return f"gpt-oss-{model}" if model in ("20b", "120b") else Path(model).expanduser().resolve().name


def _builtin_tools(args: argparse.Namespace) -> dict:
    from tritonllm.tools.browser import BrowserTool, backend_from_keys
    from tritonllm.tools.python_sandbox import PythonTool

    tools = {}
    if args.browser:  # a browser per request: it keeps the pages it opened
        search = backend_from_keys(os.environ.get("EXA_API_KEY"), os.environ.get("YDC_API_KEY"))
        tools["browser"] = lambda: BrowserTool(search)
    if args.python:  # stateless: one serves every request
        python = PythonTool()
        tools["python"] = lambda: python
    return tools


def _load(args: argparse.Namespace):
    """On the engine's thread: the checkpoint (downloaded if needed), loaded; a token source per request."""
    from tritonllm.conversation import llm_token_source
    from tritonllm.download import resolve_model
    from tritonllm.llm import LLM

    cache_dir = Path(args.cache_dir).expanduser() if args.cache_dir else None
    path = resolve_model(args.model, source=args.source, cache_dir=cache_dir, offline=args.offline, progress=True)
    log.info("loading %s on %s (context %d tokens)", path, args.device, args.context)
    llm = LLM(path, device=args.device, context_length=args.context)
    return lambda sampling: llm_token_source(llm, sampling.temperature, sampling.top_p, sampling.seed)


if __name__ == "__main__":
    sys.exit(main())
