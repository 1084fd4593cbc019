"""TritonLLM: gpt-oss-20b / gpt-oss-120b inference with every hot operation in our own Triton kernels."""

from tritonllm.llm import LLM

__all__ = ["LLM"]
