"""Weights by name: `openai:NAME` (a CLIP ViT OpenAI published) and `hf:ORG/NAME` (a Hugging Face repository
holding a `CLIPModel` or an open_clip model), downloaded once into the cache folder with progress, checked against
the sha256 their publisher gives, then read like any other checkpoint (as data: nothing in them runs).

The cache folder is $CPCL_CACHE, else $XDG_CACHE_HOME/cpcl, else ~/.cache/cpcl. A download goes to a temporary
file beside its place, is renamed there once complete and removed again when its digest is wrong; a file already
in place is checked again on every use. Offline, or on a wrong digest, the error is one line saying what to
download and where to put it. $CPCL_OPENAI_URL and $HF_ENDPOINT replace the two sites (a mirror; the tests' local server).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpcl.model.architecture import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from cpcl.model.hf import WEIGHT_FILES
from cpcl.utils.errors import CheckpointError
from cpcl.utils.files import HASH_CHUNK, atomic_write, cache_dir, sha256_of
from cpcl.utils.progress import Progress

log = logging.getLogger(__name__)

OPENAI_PREFIX, HF_PREFIX = "openai:", "hf:"
OPENAI_URL = "https://openaipublic.azureedge.net/clip/models"  # OpenAI's CLIP release (openai/CLIP, clip.py)
HF_URL = "https://huggingface.co"
OPENAI_SHA256 = {  # the ViT files of OpenAI's release: name -> sha256 (the folder of its URL, as OpenAI gives it)
    "ViT-B-32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B-16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-L-14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L-14-336px": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
}
HF_LAYOUTS = ((OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS), ("config.json", WEIGHT_FILES))  # (config, weights in order of
# preference) of the repositories cpcl reads
HF_RECORD = ".cpcl-download.json"  # in a downloaded repository's folder: each file's URL (at the commit) and digest
TIMEOUT = 30.0  # seconds a connection may stay silent
MIB = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One published file: where it is, what its bytes hash to, and how that hash is computed."""

    url: str
    digest: str  # hex
    kind: str = "sha256"  # sha256 | git-sha1 (a Hugging Face file kept in git, not LFS: its blob id)


def is_named(value: str | Path) -> bool:
    """Whether a checkpoint argument names weights to fetch (`openai:NAME`, `hf:ORG/NAME`)."""
    return str(value).startswith((OPENAI_PREFIX, HF_PREFIX))


def name_of(path: Path) -> str | None:
    """The name a file or folder of the cache was downloaded by (`openai:NAME`, `hf:ORG/NAME`); None elsewhere."""
    try:
        parts = Path(path).resolve().relative_to(cache_dir().resolve()).parts
    except ValueError:
        return None
    if len(parts) == 2 and parts[0] == "openai" and parts[1].endswith(".pt"):
        return OPENAI_PREFIX + parts[1][:-len(".pt")]
    return f"{HF_PREFIX}{parts[1]}/{parts[2]}" if len(parts) == 3 and parts[0] == "hf" else None


def fetch(name: str) -> Path:
    """The local file (`openai:`) or folder (`hf:`) of named weights, downloaded and checked when not there yet."""
    if name.startswith(OPENAI_PREFIX):
        return _fetch_openai(name[len(OPENAI_PREFIX):])
    if name.startswith(HF_PREFIX):
        return _fetch_hf(name[len(HF_PREFIX):])
    raise CheckpointError(f"{name}: not a weights name; use openai:NAME or hf:ORG/NAME")


def _fetch_openai(model: str) -> Path:
    if model not in OPENAI_SHA256:
        raise CheckpointError(f"openai:{model} is not one of OpenAI's CLIP ViT files; valid: "
                              f"{', '.join(OPENAI_PREFIX + name for name in OPENAI_SHA256)}")
    base = os.environ.get("CPCL_OPENAI_URL", OPENAI_URL).rstrip("/")
    remote = Remote(f"{base}/{OPENAI_SHA256[model]}/{model}.pt", OPENAI_SHA256[model])
    target = cache_dir() / "openai" / f"{model}.pt"
    hint = f"download {remote.url} (sha256 {remote.digest}) on a machine with internet access and put it at {target}"
    if not target.is_file():
        _download(remote, target, f"openai:{model}", hint)
    else:
        _check(target, remote, hint)
    return target


def _fetch_hf(repo: str) -> Path:
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CheckpointError(f"hf:{repo}: name a Hugging Face repository as hf:ORG/NAME")
    folder = cache_dir() / "hf" / repo
    record = folder / HF_RECORD
    if record.is_file():
        files = {name: Remote(**value) for name, value in json.loads(record.read_text(encoding="utf-8")).items()}
        for name, remote in files.items():
            _check(folder / name, remote, f"delete {folder} and run again to download hf:{repo} afresh")
        return folder
    endpoint = os.environ.get("HF_ENDPOINT", HF_URL).rstrip("/")
    needed = " or ".join(f"{config} + {weights[0]}" for config, weights in HF_LAYOUTS)
    hint = (f"on a machine with internet access, download the config and weights of {endpoint}/{repo} ({needed}) "
            f"into a folder and give that folder as the checkpoint")
    files = _hf_files(endpoint, repo, hint)
    for name, remote in files.items():
        _download(remote, folder / name, f"hf:{repo} {name}", hint)
    atomic_write(record, lambda stream: stream.write(json.dumps(
        {name: {"url": r.url, "digest": r.digest, "kind": r.kind} for name, r in files.items()}, indent=1).encode()))
    return folder


def _hf_files(endpoint: str, repo: str, hint: str) -> dict[str, Remote]:
    """The files cpcl reads from `repo` at its main revision, with their published digests (the Hub's API)."""
    listing = _get_json(f"{endpoint}/api/models/{repo}/revision/main?blobs=true", f"hf:{repo}", hint)
    siblings = {item.get("rfilename"): item for item in listing.get("siblings", []) if isinstance(item, Mapping)}
    commit = listing.get("sha", "main")
    for config, weights in HF_LAYOUTS:
        chosen = next((name for name in weights if name in siblings), None)
        if config in siblings and chosen:
            return {name: _remote(f"{endpoint}/{repo}/resolve/{commit}/{urllib.parse.quote(name)}", siblings[name])
                    for name in (config, chosen)}
    needed = " or ".join(f"{config} with {' or '.join(weights)}" for config, weights in HF_LAYOUTS)
    raise CheckpointError(f"hf:{repo} holds no CLIP cpcl reads: it needs {needed}")


def _remote(url: str, sibling: Mapping[str, Any]) -> Remote:
    lfs = sibling.get("lfs")
    if isinstance(lfs, Mapping) and isinstance(lfs.get("sha256"), str):
        return Remote(url, lfs["sha256"])
    if isinstance(sibling.get("blobId"), str):
        return Remote(url, sibling["blobId"], "git-sha1")
    raise CheckpointError(f"{url}: the Hub lists no digest for this file, so it cannot be checked")


def _request(url: str) -> urllib.request.Request:
    token = os.environ.get("HF_TOKEN")
    private = bool(token) and url.startswith(os.environ.get("HF_ENDPOINT", HF_URL))
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if private else {})


def _get_json(url: str, name: str, hint: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(_request(url), timeout=TIMEOUT) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise CheckpointError(f"{name}: {url} answered HTTP {err.code} ({err.reason}); check the name (a private "
                              f"repository needs HF_TOKEN), or {hint}") from None
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections; a body that is not JSON
        raise CheckpointError(f"cannot fetch {name} ({_reason(err)}); {hint}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{name}: {url} did not answer with a JSON object; {hint}")
    return data


def _download(remote: Remote, target: Path, name: str, hint: str) -> None:
    """Stream `remote` to `target` (atomically, with progress), then check its digest; a failed download or a
    wrong digest leaves nothing at `target`."""
    log.info("downloading %s from %s to %s", name, remote.url, target)

    def write(stream: Any) -> None:
        with urllib.request.urlopen(_request(remote.url), timeout=TIMEOUT) as response:
            size = int(response.headers.get("Content-Length") or 0)
            with Progress(math.ceil(size / MIB) if size else None, f"download {name}", "MiB") as progress:
                while chunk := response.read(MIB):
                    stream.write(chunk)
                    progress.update(1)

    try:
        atomic_write(target, write)
    except urllib.error.HTTPError as err:
        raise CheckpointError(f"cannot download {name}: {remote.url} answered HTTP {err.code} ({err.reason}); "
                              f"{hint}") from None
    except OSError as err:  # URLError, timeouts, refused or dropped connections
        raise CheckpointError(f"cannot download {name} ({_reason(err)}); {hint}") from None
    try:
        _check(target, remote, hint)
    except CheckpointError:
        target.unlink()  # never left where the next run would take it
        raise


def _check(path: Path, remote: Remote, hint: str) -> None:
    """CheckpointError unless `path`'s bytes hash to `remote`'s published digest."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {hint}")
    found = sha256_of(path) if remote.kind == "sha256" else _git_blob_sha1(path)
    if found != remote.digest:
        raise CheckpointError(f"{path} has {remote.kind} {found}, not the published {remote.digest} (a damaged or "
                              f"different file); {hint}")


def _git_blob_sha1(path: Path) -> str:
    """The id git gives a file's contents ("blob SIZE\\0" + bytes, SHA-1), which the Hub lists for non-LFS files."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
