"""First end-to-end proof that the fixtures reach the local hub through huggingface_hub."""

from __future__ import annotations

from pathlib import Path

from chatwidget.testing.hub import LocalHub


def test_snapshot_download_through_fixtures_lands_in_temp_cache(
    hf_endpoint: str, hf_cache: Path, local_hub: LocalHub
) -> None:
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download("demo/tiny-chat"))
    assert folder.is_relative_to(hf_cache)
    assert (folder / "model.safetensors").is_file()
    weights = [r for r in local_hub.requests if r.path.endswith("/model.safetensors")]
    assert any(r.method == "GET" and r.status == 200 for r in weights)
