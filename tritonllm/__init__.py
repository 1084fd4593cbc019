"""TritonLLM: gpt-oss-20b / gpt-oss-120b inference with every hot operation in our own Triton kernels.

`from tritonllm import LLM` is the API. The import is lazy so that entry points can decide
Triton's mode (TRITON_INTERPRET for CPU runs) before anything imports triton.
"""

__all__ = ["LLM"]


def __getattr__(name):
    if name == "LLM":
        from tritonllm.llm import LLM

        return LLM
    raise AttributeError(f"module 'tritonllm' has no attribute {name!r}")
