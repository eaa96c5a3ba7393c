"""core.sources: the registry of model sources, the operator's allow-list, and what exports say."""

from __future__ import annotations

import json
import os

import pytest

from core import sources
from core.sources import AllowList, ServerEntry, SourceNotAllowed
from core.toy import PRESETS


def allow_list(**env) -> AllowList:
    base = {"HOME": "/nonexistent-home"}
    return AllowList.from_environment({**base, **env})


def test_builtin_sources_are_always_allowed():
    empty = AllowList()
    for source in ("mtp", "smollm2", "toy:E1", "toy:Markov chain"):
        assert sources.check(source, empty) == source
    assert sources.builtin_sources()[:3] == ["mtp", "smollm2", "toy:E1"]


@pytest.mark.parametrize("source", ["toy:nope", "local:/etc/passwd", "local:", "server:http://evil:1", "gpt2",
                                    "", None, 3, "server:not a url", "local:/srv/models/../../etc"])
def test_everything_else_gets_one_message(source):
    policy = AllowList((sources._root("/srv/models"),), (ServerEntry("http://gpu1:8000"),))
    with pytest.raises(SourceNotAllowed) as err:
        sources.check(source, policy)
    toys = ", ".join(f"toy:{name}" for name in PRESETS)
    assert str(err.value) == (f"unknown model source {source!r}; allowed: mtp, smollm2, {toys} (local models and "
                              "servers the operator allows are opened on the Models page)")


def test_local_paths_inside_an_allowed_directory(tmp_path):
    root = tmp_path / "models"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    policy = allow_list(DECODING_EXPLORER_LOCAL_MODELS=f"{root}{os.pathsep}  ")
    assert policy.local_roots == (root.resolve(),)
    assert sources.check(f"local:{root / 'a'}", policy)
    assert sources.check(f"local:{root / 'not-yet-there.gguf'}", policy)  # inside: loading then says what is wrong
    for path in (tmp_path / "outside", root / ".." / "outside", root / "link", tmp_path):
        with pytest.raises(SourceNotAllowed):
            sources.check(f"local:{path}", policy)  # .. and symbolic links are resolved first


def test_servers_from_the_environment():
    policy = allow_list(DECODING_EXPLORER_SERVERS="http://gpu1:8000/v1, Qwen/Qwen2.5-7B@https://gpu2 \n")
    assert policy.servers == (ServerEntry("http://gpu1:8000"), ServerEntry("https://gpu2", "Qwen/Qwen2.5-7B"))
    assert sources.check("server:http://gpu1:8000", policy)
    assert sources.check("server:any/model@http://gpu1:8000/v1/", policy)  # every model there
    assert sources.check("server:Qwen/Qwen2.5-7B@https://gpu2", policy)
    with pytest.raises(SourceNotAllowed):
        sources.check("server:other@https://gpu2", policy)  # only the named model there


def test_config_file(tmp_path):
    config = tmp_path / "sources.json"
    config.write_text(json.dumps({"local_models": [str(tmp_path)], "servers": [
        {"url": "http://gpu1:8000", "model": "big", "api_key_env": "VLLM_KEY", "top_logprobs": -1}]}))
    policy = allow_list(DECODING_EXPLORER_CONFIG=str(config))
    assert policy.local_roots == (tmp_path.resolve(),)
    assert policy.servers == (ServerEntry("http://gpu1:8000", "big", "VLLM_KEY", -1),)
    default = tmp_path / "xdg" / "decoding-explorer" / "sources.json"  # the default place
    default.parent.mkdir(parents=True)
    default.write_text(json.dumps({"local_models": ["/srv"]}))
    assert allow_list(XDG_CONFIG_HOME=str(tmp_path / "xdg")).local_roots == (sources._root("/srv"),)


@pytest.mark.parametrize(("content", "match"), [
    ("{", "is not valid JSON"),
    ("[]", "must hold a JSON object"),
    ('{"servers": "http://x"}', "'servers' in the sources config must be a list"),
    ('{"servers": [{"url": "http://x", "key": "abc"}]}', r"unknown key\(s\) key in a sources config server"),
    ('{"servers": [{"model": "m"}]}', "must be an object with a 'url'"),
    ('{"servers": [{"url": "http://user:pw@x"}]}', "must not contain credentials"),
    ('{"local_models": "/srv"}', "'local_models' in the sources config must be a list of strings"),
])
def test_bad_config_files_are_named(tmp_path, content, match):
    config = tmp_path / "sources.json"
    config.write_text(content)
    with pytest.raises(ValueError, match=match):
        allow_list(DECODING_EXPLORER_CONFIG=str(config))


def test_a_missing_named_config_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="which is not a file"):
        allow_list(DECODING_EXPLORER_CONFIG=str(tmp_path / "nope.json"))


def test_labels_kinds_and_size():
    assert sources.label("server:m@http://h:1") == "Server: m at http://h:1"
    assert sources.label("server:http://h:1") == "Server: default model at http://h:1"
    assert sources.label("local:/a/b/model.gguf") == "Local: model.gguf"
    assert [sources.kind(s) for s in ("mtp", "smollm2", "toy:E1", "local:/x", "server:http://h", "x")] == [
        "shipped", "smollm2", "toy", "local", "server", ""]
    assert [sources.is_large(s) for s in ("mtp", "toy:E1", "smollm2", "local:/x", "server:http://h")] == [
        False, False, True, True, True]
    assert sources.server_source("http://h:1/v1/", "m") == "server:m@http://h:1"
    assert sources.split_server("org/m@x@http://h") == ("org/m@x", "http://h")


def test_load_refuses_before_touching_the_path(tmp_path, monkeypatch):
    import core.hf

    touched = []
    monkeypatch.setattr(core.hf, "load_local_model", lambda *a, **k: touched.append(a))
    with pytest.raises(SourceNotAllowed):
        sources.load(f"local:{tmp_path}", AllowList())
    assert touched == []


def test_source_info_names_the_model_and_never_a_key(tmp_path, monkeypatch):
    info = sources.source_info("mtp")
    assert info["kind"] == "shipped" and info["name"] == "mtp-default" and info["revision"].startswith("sha256:")
    assert sources.source_info("toy:E1")["revision"] == "exact toy (core.toy.PRESETS)"
    weights = tmp_path / "m.gguf"
    weights.write_bytes(b"GGUF-not-really")
    local = sources.source_info(f"local:{weights}")
    assert local["path"] == str(weights) and local["revision"] == (
        "sha256:" + __import__("hashlib").sha256(b"GGUF-not-really").hexdigest())
    monkeypatch.setenv("SECRET_KEY_ENV", "sk-123")
    server = sources.source_info("server:big@http://gpu1:8000")
    assert server == {"source": "server:big@http://gpu1:8000", "kind": "server", "label": "Server: big at http://gpu1:8000",
                      "base_url": "http://gpu1:8000", "name": "big"}
    assert "sk-123" not in json.dumps(server)


def test_smollm2_info_hashes_the_shipped_gguf():
    from core.hf import SMOLLM2

    info = sources.source_info("smollm2")
    assert info["name"] == SMOLLM2.name and info["revision"].startswith("sha256:")
