"""TritonLLM: gpt-oss inference with every hot operation in our own Triton kernels."""

from setuptools import find_packages, setup

setup(
    name="tritonllm",
    version="0.1.0",
    description="Single-GPU gpt-oss-20b / gpt-oss-120b inference in Triton kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tritonllm", "tritonllm.*", "build_kernels"]),
    py_modules=["bench_chat", "streamlit_chat"],
    include_package_data=True,
    package_data={"tritonllm.kernels": ["tuning.json"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.4",
        "numpy",
        "tqdm",
        "openai-harmony>=0.0.8",
        "huggingface_hub",
        "modelscope",
    ],
    extras_require={
        "runner": ["triton_runner", "termcolor"],
        "server": ["fastapi", "uvicorn", "openai"],
        "ui": ["streamlit", "openai"],
        "test": ["pytest", "pytest-timeout", "safetensors", "quicktok-v1", "playwright"],
    },
    entry_points={"console_scripts": ["tritonllm=tritonllm.chat:main"]},
)
