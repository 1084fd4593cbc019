"""Turn the chat CLI's model argument into a local checkpoint folder, downloading it if needed.

`model` is a checkpoint folder, or "20b" / "120b": OpenAI's gpt-oss repos on ModelScope (the
default: reachable from mainland China) or on the Hugging Face Hub. The hub libraries do the
transfer, and with it the caching (each library's own cache, or `cache_dir`), the progress
bars and the resuming; this module picks the files, adds what the libraries leave out, and
turns every failure into a one-line `DownloadError`.

Only the Hugging Face layout at the repo root is fetched (config.json, the index and its
shards: ~13 GB for 20b, ~65 GB for 120b), not `original/` or `metal/`. The engine reads either
layout; the root one is split into shards of a few GB, so an interruption loses at most part
of one shard, and shards download in parallel, where `original/` for 20b is one 13 GB file.

What each library guarantees, read from the installed sources (huggingface_hub 2.4,
modelscope 1.40 with modelscope-hub 0.5):

* huggingface_hub downloads over plain HTTP into a temporary file and checks only its size
  against the Hub's before moving it into the cache. A dropped connection is resumed with a
  Range request within the same call, but a temporary file left by a killed process is not
  reused. Files stored on Xet (hf_xet installed) are rebuilt from content-addressed chunks.
  So after each download we hash the files that are new in the cache against their blob name,
  which is the Hub's ETag: the sha256 of an LFS file, the git blob sha1 of a small one.
* modelscope checks each file's size and sha256 against the repo listing (on every call,
  cached files included, so an online call re-reads the whole cached model), retries a bad
  transfer, and resumes from the `.incomplete` file that an interrupted run, even a killed
  process, leaves next to the target.

Offline (`offline=True`, or the hub unreachable) the cached snapshot is used if it holds
config.json, the index and every shard the index names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from tqdm import tqdm

from tritonllm.model.checkpoint import find_checkpoint_dir
from tritonllm.model.safetensors_io import CheckpointError

log = logging.getLogger(__name__)

# Model name -> repo id on each source. The ModelScope ids are OpenAI's mirror there, as
# given to us; not checked against modelscope.cn from here (no network).
REPOS = {
    "modelscope": {"20b": "openai-mirror/gpt-oss-20b", "120b": "openai-mirror/gpt-oss-120b"},
    "hf": {"20b": "openai/gpt-oss-20b", "120b": "openai/gpt-oss-120b"},
}
HUB_NAMES = {"modelscope": "ModelScope", "hf": "Hugging Face"}
INDEX = "model.safetensors.index.json"
# Both libraries match these with fnmatch, where "*" also matches "/": "*.safetensors" would
# pull original/model.safetensors too, hence the "model" prefix.
FILES = ["config.json", INDEX, "model*.safetensors"]


class DownloadError(RuntimeError):
    """The model could not be found, downloaded or verified; the message says what to do."""


def resolve_model(
    model: str,
    source: str = "modelscope",
    cache_dir: Path | None = None,
    offline: bool = False,
    progress: bool = True,
) -> Path:
    """The local checkpoint folder for `model`: a folder (returned as is once it holds
    config.json, directly or in original/), or "20b" / "120b", downloaded from `source`
    ("modelscope" or "hf") into `cache_dir` (default: the library's cache) unless cached.
    A folder literally named 20b is passed as "./20b". `progress` turns huggingface_hub's
    progress bars on or off; modelscope always draws its own."""
    if source not in REPOS:
        raise DownloadError(f"unknown model source {source!r}: expected one of {', '.join(REPOS)}")
    if model not in REPOS[source]:
        path = Path(model).expanduser()
        if not path.exists():
            raise DownloadError(
                f"{model!r} is neither a checkpoint folder nor a model name: pass a folder or one of "
                + ", ".join(REPOS[source])
            )
        try:
            find_checkpoint_dir(path)
        except CheckpointError as e:
            raise DownloadError(f"{e}: not a gpt-oss checkpoint folder") from None
        return path

    repo, hub = REPOS[source][model], HUB_NAMES[source]
    fetch, cache = (_hf, _hf_cache) if source == "hf" else (_modelscope, _modelscope_cache)
    failure = None
    if not offline:
        try:
            folder = fetch(repo, cache_dir, False, progress)
            _check_complete(folder)
            return folder
        except Exception as e:  # noqa: BLE001 - network, hub or integrity failure: a complete cached copy still does
            failure = e
            log.warning("downloading %s from %s failed (%s); looking for a cached copy", repo, hub, _brief(e))
    try:
        folder = fetch(repo, cache_dir, True, progress)
        _check_complete(folder)
    except Exception as e:
        where = cache_dir or cache()
        if failure is None:
            raise DownloadError(
                f"gpt-oss-{model} ({repo}) is not completely in the {hub} cache at {where} and offline mode is on: "
                "run once online to download it, or pass a checkpoint folder"
            ) from e
        raise DownloadError(
            f"could not download gpt-oss-{model} ({repo}) from {hub} ({_brief(failure)}) and no complete copy is "
            f"cached at {where}: check the network or use the other source, then run again "
            "(finished files are kept)"
        ) from failure
    if failure is not None:
        log.warning("using the cached copy of %s at %s", repo, folder)
    return folder


def _check_complete(folder: Path) -> None:
    """Raise unless `folder` holds config.json, the index and every shard the index names."""
    try:
        shards = set(json.loads((folder / INDEX).read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DownloadError(f"{folder}: no readable {INDEX} ({_brief(e)})") from None
    missing = sorted(name for name in ("config.json", *shards) if not (folder / name).is_file())
    if missing:
        raise DownloadError(f"{folder}: incomplete, missing {', '.join(missing)}")


def _brief(e: BaseException) -> str:
    """An exception as one short line: the hub libraries' messages run over several, and
    modelscope's FileDownloadError only counts the failed files (the first is named here)."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"
    failed = getattr(e, "failed_files", None)
    if isinstance(failed, dict) and failed:
        name, first = next(iter(failed.items()))
        text += f"; {name}: {_brief(first)}"
    return text[:300]


class _SilentTqdm(tqdm):
    """A progress bar that never shows, for progress=False."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


def _hf_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hf(repo: str, cache_dir: Path | None, offline: bool, progress: bool) -> Path:
    """Snapshot `repo` from the Hugging Face Hub (offline: from its cache), then hash the files
    this call added to the cache: huggingface_hub itself checks only their size."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.file_download import repo_folder_name

    args = {"repo_id": repo, "cache_dir": cache_dir, "allow_patterns": FILES}
    if offline:
        return Path(snapshot_download(**args, local_files_only=True))
    blobs = Path(cache_dir or _hf_cache()).expanduser() / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"
    cached = {p.name for p in blobs.iterdir()} if blobs.is_dir() else set()
    folder = Path(snapshot_download(**args, tqdm_class=None if progress else _SilentTqdm))
    for file in sorted(folder.iterdir()):
        blob = file.resolve()
        if blob.parent.name == "blobs" and blob.name not in cached:
            _check_blob(file, blob)
    return folder


def _check_blob(file: Path, blob: Path) -> None:
    """Hash a new blob against its name, the Hub's ETag: sha256 for LFS files, git's blob
    sha1 for the others. On a mismatch delete it, so that the next call downloads it again."""
    if re.fullmatch(r"[0-9a-f]{64}", blob.name):
        digest = hashlib.sha256()
    elif re.fullmatch(r"[0-9a-f]{40}", blob.name):
        digest = hashlib.sha1(b"blob %d\0" % blob.stat().st_size)
    else:
        log.debug("%s: blob name %s is no checksum; not verified", file.name, blob.name)
        return
    with open(blob, "rb") as f:
        actual = hashlib.file_digest(f, lambda: digest).hexdigest()
    if actual != blob.name:
        file.unlink()
        blob.unlink()
        raise DownloadError(f"{file.name}: checksum mismatch (got {actual}, the Hub says {blob.name}); deleted it")
    log.debug("%s: checksum ok", file.name)


def _modelscope_cache() -> Path:
    from modelscope_hub import get_default_config

    return get_default_config().cache_dir


def _modelscope(repo: str, cache_dir: Path | None, offline: bool, progress: bool) -> Path:
    """Snapshot `repo` from ModelScope (offline: from its cache); modelscope checks sizes and
    sha256 itself and has no switch for its progress bars."""
    from modelscope.hub.snapshot_download import snapshot_download

    return Path(snapshot_download(repo, cache_dir=cache_dir, allow_patterns=FILES, local_files_only=offline))
