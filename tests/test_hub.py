"""Weights by name (`openai:NAME`, `hf:ORG/NAME`): downloaded from a local HTTP server on 127.0.0.1 (no test reaches
the internet) into the cache folder, checked against the published digest, read as data; offline or on a wrong
digest, one line saying what to download and where to put it."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cpcl.cli import main
from cpcl.model import CLIP, ClipConfig, TextConfig, VisionConfig, load_clip, read_checkpoint
from cpcl.model import hub
from cpcl.model.hf import write_hf_directory
from cpcl.utils.errors import CheckpointError

NAME = "ViT-T-8"  # a tiny model published on the test's server under OpenAI's URL scheme


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    """(folder served at http://127.0.0.1:PORT/, base URL); the cache and both sites point at it."""
    folder = tmp_path / "site"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("CPCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CPCL_OPENAI_URL", f"{base}/clip/models")
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield folder, base
    httpd.shutdown()
    httpd.server_close()


def tiny() -> CLIP:
    torch.manual_seed(3)
    return CLIP(ClipConfig(embed_dim=32, image=VisionConfig(width=64, layers=1, heads=1, patch_size=8,
                                                            image_size=(16, 16)),
                           text=TextConfig(width=64, layers=1, heads=1, context_length=8))).eval()


class Archive(nn.Module):
    """A CLIP's parameters under OpenAI's names, traced into a TorchScript archive as OpenAI's files are."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


def publish_openai(folder: Path, monkeypatch, model: CLIP) -> tuple[Path, str]:
    """The archive at OpenAI's URL layout (clip/models/SHA256/NAME.pt), its digest registered for NAME."""
    staging = folder.parent / f"{NAME}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(Archive(model), torch.zeros(1, 3, 16, 16)), str(staging))
    sha256 = hashlib.sha256(staging.read_bytes()).hexdigest()
    monkeypatch.setitem(hub.OPENAI_SHA256, NAME, sha256)
    target = folder / "clip" / "models" / sha256 / f"{NAME}.pt"
    target.parent.mkdir(parents=True)
    staging.rename(target)
    return target, sha256


@pytest.fixture
def openai_published(server, monkeypatch):
    folder, base = server
    model = tiny()
    target, sha256 = publish_openai(folder, monkeypatch, model)
    return model, target, sha256, base


def test_an_openai_name_is_downloaded_checked_and_loaded_like_the_file(openai_published, tmp_path, caplog):
    model, published, sha256, _ = openai_published
    out = tmp_path / "emb.npz"
    with caplog.at_level("INFO", logger="cpcl"):
        assert main(["encode", "--checkpoint", f"openai:{NAME}", "--texts", "a man", "--out", str(out)]) == 0
    cached = tmp_path / "cache" / "openai" / f"{NAME}.pt"
    assert cached.read_bytes() == published.read_bytes()
    assert "records no architecture" not in caplog.text  # OpenAI's own file: its convention, no guess warned
    direct, _ = load_clip(published)
    for key, value in direct.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    published.unlink()  # the next use reads the cache, checked again, without the server
    again = tmp_path / "again.npz"
    assert main(["encode", "--checkpoint", f"openai:{NAME}", "--texts", "a man", "--out", str(again)]) == 0
    np.testing.assert_array_equal(np.load(out)["text"], np.load(again)["text"])


def test_a_download_with_the_wrong_digest_is_refused_and_not_kept(openai_published, tmp_path):
    _, published, sha256, base = openai_published
    published.write_bytes(published.read_bytes()[:-10])  # what the server sends is not what was published
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(f"openai:{NAME}")
    message = str(info.value)
    cached = tmp_path / "cache" / "openai" / f"{NAME}.pt"
    assert "\n" not in message and f"not the published {sha256}" in message
    assert f"download {base}/clip/models/{sha256}/{NAME}.pt" in message and f"put it at {cached}" in message
    assert not cached.exists() and not list(cached.parent.iterdir())  # nothing half-written either


def test_a_damaged_cached_file_is_refused_in_one_line(openai_published, tmp_path):
    read_checkpoint(f"openai:{NAME}")
    cached = tmp_path / "cache" / "openai" / f"{NAME}.pt"
    cached.write_bytes(cached.read_bytes() + b"x")
    with pytest.raises(CheckpointError, match=f"{cached} has sha256 [0-9a-f]{{64}}, not the published"):
        read_checkpoint(f"openai:{NAME}")


def test_offline_the_cli_says_what_to_download_and_where_to_put_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CPCL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CPCL_OPENAI_URL", "http://127.0.0.1:9/clip/models")  # the discard port: nothing listens
    out = tmp_path / "e.npz"
    assert main(["-q", "encode", "--checkpoint", "openai:ViT-B-16", "--texts", "x", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    sha = hub.OPENAI_SHA256["ViT-B-16"]
    assert "\n" not in err and err.startswith("cpcl encode: error: cannot download openai:ViT-B-16 (")
    assert err.endswith(f"download http://127.0.0.1:9/clip/models/{sha}/ViT-B-16.pt (sha256 {sha}) on a machine with "
                        f"internet access and put it at {tmp_path / 'cache' / 'openai' / 'ViT-B-16.pt'}")


def test_an_unknown_openai_name_lists_the_known_ones():
    with pytest.raises(CheckpointError, match="openai:ViT-B-99 is not one of .*openai:ViT-B-16"):
        read_checkpoint("openai:ViT-B-99")


def test_the_cache_folder_follows_xdg_and_can_be_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("CPCL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "cpcl"
    monkeypatch.setenv("CPCL_CACHE", str(tmp_path / "mine"))
    assert hub.cache_dir() == tmp_path / "mine"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def publish_hf(folder: Path, repo: str, files: dict[str, bytes], lfs: set[str], commit: str = "c0ffee") -> None:
    """A Hub repository on the test server: the API's listing and each file at /REPO/resolve/COMMIT/FILE."""
    siblings = []
    for name, data in files.items():
        path = folder / repo / "resolve" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entry = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(b"pointer " + name.encode())}
        if name in lfs:
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        else:
            entry["blobId"] = git_blob_sha1(data)
        siblings.append(entry)
    listing = folder / "api" / "models" / repo / "revision" / "main"  # the server drops the query string
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"sha": commit, "siblings": siblings + [{"rfilename": "README.md"}]}))


def test_an_hf_repository_is_downloaded_checked_and_loaded(server, tmp_path):
    folder, _ = server
    model = tiny()
    export = tmp_path / "export"
    write_hf_directory(model.state_dict(), model.config, export)
    files = {name: (export / name).read_bytes() for name in ("config.json", "model.safetensors")}
    publish_hf(folder, "org/tiny-clip", files, lfs={"model.safetensors"})
    loaded, config = load_clip("hf:org/tiny-clip")
    assert config.image.width == 64
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=1e-6, rtol=0)
    cached = tmp_path / "cache" / "hf" / "org" / "tiny-clip"
    assert (cached / "model.safetensors").read_bytes() == files["model.safetensors"]
    (cached / "config.json").write_text("{}")  # damaged after the download: refused, not read
    with pytest.raises(CheckpointError, match="config.json has git-sha1 .*delete .*tiny-clip and run again"):
        read_checkpoint("hf:org/tiny-clip")


def test_an_hf_repository_with_the_wrong_digest_is_refused(server, tmp_path):
    folder, _ = server
    model = tiny()
    write_hf_directory(model.state_dict(), model.config, tmp_path / "export")
    files = {name: (tmp_path / "export" / name).read_bytes() for name in ("config.json", "model.safetensors")}
    publish_hf(folder, "org/bad", files, lfs={"model.safetensors"})
    (folder / "org" / "bad" / "resolve" / "c0ffee" / "model.safetensors").write_bytes(b"not the weights")
    with pytest.raises(CheckpointError, match="model.safetensors has sha256 .* not the published"):
        read_checkpoint("hf:org/bad")
    assert not (tmp_path / "cache" / "hf" / "org" / "bad" / "model.safetensors").exists()


def test_an_hf_repository_without_clip_files_is_named(server):
    folder, _ = server
    publish_hf(folder, "org/text-only", {"tokenizer.json": b"{}"}, lfs=set())
    with pytest.raises(CheckpointError, match="hf:org/text-only holds no CLIP cpcl reads"):
        read_checkpoint("hf:org/text-only")
