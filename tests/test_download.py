"""Model download: both hubs' real client libraries against a fake hub on 127.0.0.1.

The fake speaks just enough of each protocol, as the installed clients use it:

* Hugging Face Hub (huggingface_hub 2.4): `GET /api/models/{repo}/revision/{rev}` (the commit),
  `GET /api/models/{repo}/tree/{commit}?recursive=true` (files with sizes and LFS sha256),
  `HEAD` and `GET /{repo}/resolve/{commit}/{file}` (ETag, X-Repo-Commit, Content-Length, Range).
* ModelScope (modelscope 1.40 / modelscope-hub 0.5): `GET /api/v1/models/{repo}/repo/files`
  (files with sizes and sha256) and `GET /api/v1/models/{repo}/repo?FilePath=...` (Range).

It serves a tiny synthetic checkpoint in the Hugging Face layout, plus files the engine does
not need (README.md, original/), and can hang up mid-file, corrupt or truncate a transfer.
"""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import torch

from tritonllm.download import DownloadError, resolve_model
from tritonllm.model.checkpoint import load_checkpoint
from tritonllm.model.config import preset
from tritonllm.model.synthetic import write_checkpoint

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPOS = {"hf": "openai/gpt-oss-20b", "modelscope": "openai-mirror/gpt-oss-20b"}
HF_ROUTES = {
    "info": re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)"),
    "tree": re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)"),
    "file": re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)"),
}
MS_ROUTES = {
    "tree": re.compile(r"/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo/files"),
    "file": re.compile(r"/api/v1/models/(?P<repo>[^/]+/[^/]+)/repo"),
}


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """One loopback HTTP server answering both hubs' download calls for the repos in REPOS.

    `drop_once`: file names whose next GET sends half its body, then hangs up.
    `corrupt`: file names served with one byte flipped (same size).
    `truncate`: file names served 100 bytes short, with a matching Content-Length.
    `requests`: (method, file name, Range header) of every file request served.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.drop_once: set[str] = set()
        self.corrupt: set[str] = set()
        self.truncate: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, req: BaseHTTPRequestHandler, head: bool) -> None:
        url = urlsplit(req.path)
        path, query = unquote(url.path), parse_qs(url.query)
        for kind, route in HF_ROUTES.items():
            if (m := route.fullmatch(path)) and m["repo"] == REPOS["hf"]:
                if kind == "info":
                    return self.send_json(req, {"id": m["repo"], "sha": COMMIT, "siblings": self.hf_siblings()})
                if kind == "tree":
                    return self.send_json(req, self.hf_tree())
                return self.send_file(req, m["file"], head, hf=True)
        for kind, route in MS_ROUTES.items():
            if (m := route.fullmatch(path)) and m["repo"] == REPOS["modelscope"]:
                if kind == "tree":
                    return self.send_json(req, {"Code": 200, "Success": True, "Data": {"Files": self.ms_files()}})
                return self.send_file(req, query["FilePath"][0], head, hf=False)
        self.send_json(req, {"error": "not found"}, status=404)

    def hf_siblings(self) -> list[dict]:
        return [{"rfilename": name} for name in self.files]

    def hf_tree(self) -> list[dict]:
        tree = []
        for name, data in self.files.items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_sha1(data)}
            if name.endswith(".safetensors"):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            tree.append(entry)
        return tree

    def ms_files(self) -> list[dict]:
        return [
            {
                "Name": name.rsplit("/", 1)[-1],
                "Path": name,
                "Type": "blob",
                "Size": len(data),
                "Sha256": hashlib.sha256(data).hexdigest(),
                "Revision": COMMIT,
            }
            for name, data in self.files.items()
        ]

    def send_json(self, req, body, status=200):
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def send_file(self, req, name: str, head: bool, hf: bool) -> None:
        if name not in self.files:
            return self.send_json(req, {"error": f"{name} not found"}, status=404)
        data = self.files[name]
        headers = {"Accept-Ranges": "bytes"}
        if hf:
            lfs = name.endswith(".safetensors")
            headers["ETag"] = f'"{hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)}"'
            headers["X-Repo-Commit"] = COMMIT
        if not head:
            self.requests.append(("GET", name, req.headers.get("Range")))
            if name in self.corrupt:
                data = bytearray(data)
                data[len(data) // 2] ^= 0xFF
                data = bytes(data)
            if name in self.truncate:
                data = data[:-100]
        status, body = 200, data
        if not head and (r := re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range") or "")):
            start, end = int(r[1]), int(r[2] or len(data) - 1)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        req.send_response(status)
        for key, value in headers.items():
            req.send_header(key, value)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if head:
            return
        if name in self.drop_once:
            self.drop_once.discard(name)
            body = body[: len(body) // 2]  # then the handler returns and the server hangs up
        req.wfile.write(body)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(
        preset("tiny", vocab_size=1024), "hf", 0, tmp_path_factory.mktemp("ckpt"), shard_bytes=200_000
    )


@pytest.fixture
def hub(checkpoint, tmp_path, monkeypatch):
    files = {p.name: p.read_bytes() for p in sorted(checkpoint.iterdir())}
    files["README.md"] = b"# not needed\n"
    files["original/config.json"] = files["config.json"]
    files["original/model.safetensors"] = b"\0" * 1000
    fake = FakeHub(files)

    # huggingface_hub copies HF_ENDPOINT into `constants.ENDPOINT` and the resolve-URL template
    # when first imported, which an earlier test may already have done: setting the variable
    # now is not enough, so the constants are patched too (the functions read them at call time).
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setattr(hf_constants, "ENDPOINT", fake.url)
    monkeypatch.setattr(
        hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)

    # modelscope-hub reads MODELSCOPE_ENDPOINT (MODELSCOPE_DOMAIN is its deprecated alias) into a
    # process-wide config made on first use: drop that config so the next one reads the fake's
    # address. MODELSCOPE_HOME keeps its session file out of the real home.
    import modelscope_hub._download
    import modelscope_hub._legacy_api
    import modelscope_hub.config

    monkeypatch.setenv("MODELSCOPE_ENDPOINT", fake.url)
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)
    # Fast failures: no pause before re-fetching a corrupted file, one attempt at a listing.
    monkeypatch.setattr(modelscope_hub._download, "DOWNLOAD_INTEGRITY_RETRY_BACKOFF", 0.0)
    monkeypatch.setattr(modelscope_hub._legacy_api, "REPO_TREE_PAGE_MAX_ATTEMPTS", 1)
    yield fake
    fake.stop()


SOURCES = ["hf", "modelscope"]
SHARD = "model-00001-of-00004.safetensors"


def fetch(source, cache, **kwargs) -> Path:
    return resolve_model("20b", source, cache_dir=cache, progress=False, **kwargs)


def assert_same(folder: Path, checkpoint: Path):
    wanted = sorted(p.name for p in checkpoint.iterdir())
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".incomplete")) == wanted
    for name in wanted:
        assert (folder / name).read_bytes() == (checkpoint / name).read_bytes(), name


@pytest.mark.parametrize("source", SOURCES)
def test_download_fetches_only_the_root_layout_and_loads(hub, checkpoint, tmp_path, source):
    folder = fetch(source, tmp_path / "cache")
    assert_same(folder, checkpoint)  # no README.md, no original/
    assert {name for _, name, _ in hub.requests} == {p.name for p in checkpoint.iterdir()}
    weights = load_checkpoint(folder, torch.device("cpu"), progress=False)
    reference = load_checkpoint(checkpoint, torch.device("cpu"), progress=False)
    assert torch.equal(weights.embedding, reference.embedding)

    hub.requests.clear()
    assert fetch(source, tmp_path / "cache") == folder  # cached: nothing downloaded again
    assert hub.requests == []


@pytest.mark.parametrize("source", SOURCES)
def test_dropped_connection_resumes_with_a_range_request(hub, checkpoint, tmp_path, source, monkeypatch):
    # huggingface_hub writes (and so resumes from) whole 10 MB chunks: smaller ones here, so that
    # half of this 200 kB shard is worth resuming from.
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 16_384)
    hub.drop_once.add(SHARD)
    folder = fetch(source, tmp_path / "cache")
    assert_same(folder, checkpoint)
    first, second = [r for _, name, r in hub.requests if name == SHARD]
    start = int(re.fullmatch(r"bytes=(\d+)-", second)[1])
    assert first is None and 0 < start <= (checkpoint / SHARD).stat().st_size // 2


def test_modelscope_resumes_the_partial_file_of_an_earlier_run(hub, checkpoint, tmp_path):
    cache = tmp_path / "cache"
    snapshot = cache / "models" / "openai-mirror--gpt-oss-20b" / "snapshots" / "master"
    snapshot.mkdir(parents=True)
    data = (checkpoint / SHARD).read_bytes()
    (snapshot / (SHARD + ".incomplete")).write_bytes(data[:50_000])
    assert_same(fetch("modelscope", cache), checkpoint)
    assert [r for _, name, r in hub.requests if name == SHARD] == ["bytes=50000-"]


def test_hf_ignores_the_partial_file_of_an_earlier_run(hub, checkpoint, tmp_path):
    """huggingface_hub 2.4 downloads to a fresh temporary file: a stale partial one is not reused,
    and in particular never spliced into the result."""
    cache = tmp_path / "cache"
    blobs = cache / "models--openai--gpt-oss-20b" / "blobs"
    blobs.mkdir(parents=True)
    sha = hashlib.sha256((checkpoint / SHARD).read_bytes()).hexdigest()
    (blobs / f"{sha}.incomplete").write_bytes(b"garbage" * 1000)
    assert_same(fetch("hf", cache), checkpoint)
    assert [r for _, name, r in hub.requests if name == SHARD] == [None]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_bad_transfer_is_rejected_and_fetched_again_next_time(hub, checkpoint, tmp_path, source, fault):
    cache = tmp_path / "cache"
    getattr(hub, fault).add(SHARD)
    with pytest.raises(DownloadError, match="could not download gpt-oss-20b") as e:
        fetch(source, cache)
    assert "\n" not in str(e.value)
    bad = hashlib.sha256((checkpoint / SHARD).read_bytes()).hexdigest()
    # Nothing of the bad shard is left where it would pass for the file: no snapshot entry, no blob.
    assert not list(cache.rglob(SHARD))
    assert not [p for p in cache.rglob(f"*{bad}*") if p.suffix not in (".incomplete", ".lock")]

    getattr(hub, fault).clear()
    hub.requests.clear()
    assert_same(fetch(source, cache), checkpoint)
    assert {name for _, name, _ in hub.requests} == {SHARD}


@pytest.mark.parametrize("source", SOURCES)
def test_cached_model_works_without_the_hub(hub, checkpoint, tmp_path, source):
    folder = fetch(source, tmp_path / "cache")
    hub.stop()
    assert fetch(source, tmp_path / "cache", offline=True) == folder
    assert fetch(source, tmp_path / "cache") == folder  # hub unreachable: falls back to the cache
    assert_same(folder, checkpoint)


@pytest.mark.parametrize("source", SOURCES)
def test_nothing_cached_gives_a_clear_error(hub, tmp_path, source):
    with pytest.raises(DownloadError, match=r"gpt-oss-20b .* not completely in the .* offline mode .* run once online"):
        fetch(source, tmp_path / "cache", offline=True)
    hub.stop()
    with pytest.raises(DownloadError, match=r"could not download gpt-oss-20b .* check the network") as e:
        fetch(source, tmp_path / "cache")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("source", SOURCES)
def test_incomplete_cache_is_not_used_offline(hub, tmp_path, source):
    folder = fetch(source, tmp_path / "cache")
    (folder / SHARD).unlink()
    with pytest.raises(DownloadError, match="offline mode"):
        fetch(source, tmp_path / "cache", offline=True)


def test_folders_names_and_sources(checkpoint, tmp_path):
    assert resolve_model(str(checkpoint)) == checkpoint
    (tmp_path / "original").mkdir()
    (tmp_path / "original" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path), source="hf") == tmp_path
    (tmp_path / "empty").mkdir()
    with pytest.raises(DownloadError, match="not a gpt-oss checkpoint folder"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(DownloadError, match=r"neither a checkpoint folder nor a model name.*20b, 120b"):
        resolve_model("7b")
    with pytest.raises(DownloadError, match="unknown model source 'github'"):
        resolve_model("20b", source="github")
