"""A source that looks like a hub id and is not a local path: the resolver says it will be
downloaded, and HF_HUB_OFFLINE=1 is honoured with an error naming the source. No test
here reaches the network: snapshot_download is replaced by a recorder."""
import logging

import pytest

from reviewgen.weights import hub

huggingface_hub = pytest.importorskip("huggingface_hub")


@pytest.fixture
def recorder(monkeypatch, tmp_path):
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        if kwargs.get("local_files_only"):
            raise huggingface_hub.errors.LocalEntryNotFoundError("not in the cache")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    return calls


def test_a_hub_id_is_announced_before_it_is_downloaded(monkeypatch, recorder, caplog, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with caplog.at_level(logging.INFO, logger="reviewgen"):
        assert hub.resolve("some-org/some-model") == str(tmp_path)
    assert recorder and recorder[0][0] == "some-org/some-model"
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("some-org/some-model" in m and "download" in m and "Hugging Face Hub" in m for m in messages)


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_hf_hub_offline_is_honoured_with_an_error_naming_the_source(monkeypatch, recorder, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    with pytest.raises(hub.ModelNotFoundError, match="HF_HUB_OFFLINE") as info:
        hub.resolve("some-org/some-model")
    assert "some-org/some-model" in str(info.value)
    assert all(kwargs.get("local_files_only") for _, kwargs in recorder)  # the cache only, no network


def test_offline_mode_still_uses_a_cached_snapshot(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen = {}

    def cached(repo_id, **kwargs):
        seen.update(kwargs)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cached)
    assert hub.resolve("some-org/cached-model") == str(tmp_path)
    assert seen.get("local_files_only") is True


def test_local_looking_sources_never_reach_the_hub(monkeypatch, recorder):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for source in ("./some-org/model", "/abs/org/model", "a/b/c", "~/org/model", "no-slash"):
        with pytest.raises(hub.ModelNotFoundError, match="not found"):
            hub.resolve(source)
    assert recorder == []
