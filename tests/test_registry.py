"""The adapter registry: versions, promotion, rollback; atomic and shared between readers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from base.errors import AdapterError
from training.registry import AdapterRegistry


def saved_adapter(path: Path, marker: str = "a") -> Path:
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 4, "marker": marker}))
    (path / "adapter_model.safetensors").write_bytes(b"weights-" + marker.encode())
    return path


def test_versions_are_numbered_copied_and_described(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    assert registry.versions() == [] and registry.active() is None
    v1 = registry.add(saved_adapter(tmp_path / "src1"), meta={"base": "phi3", "data_hash": "d1"})
    v2 = registry.add(saved_adapter(tmp_path / "src2", "b"), meta={"parent": "v0001"})
    assert [v.version for v in registry.versions()] == ["v0001", "v0002"]
    assert v1.base == "phi3" and v1.meta["data_hash"] == "d1" and v1.created_at
    assert (v2.path / "adapter_model.safetensors").read_bytes() == b"weights-b"
    assert registry.active() is None  # adding does not promote


def test_promote_and_rollback_walk_the_history_down_to_the_base_model(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    for n in range(3):
        registry.add(saved_adapter(tmp_path / f"s{n}"))
    registry.promote("v0001")
    registry.promote("v0003")
    assert registry.active() == "v0003"
    assert registry.rollback() == "v0001"
    assert registry.rollback() is None
    with pytest.raises(AdapterError, match="nothing to roll back"):
        registry.rollback()
    assert registry.rollback(to="v0002") == "v0002"
    assert registry.state()["reason"] == "rollback"
    # Another process reading the same folder sees the same state.
    assert AdapterRegistry(tmp_path / "reg").active() == "v0002"


def test_bad_versions_and_sources_are_clear_errors(tmp_path: Path) -> None:
    registry = AdapterRegistry(tmp_path / "reg")
    with pytest.raises(AdapterError, match="no adapter version 'v0042'"):
        registry.promote("v0042")
    with pytest.raises(AdapterError, match="not a valid adapter version"):
        registry.path("../../etc")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match="not a saved adapter"):
        registry.add(tmp_path / "empty")
    # A half-copied version (no adapter_config.json) is invisible and cannot be promoted.
    (tmp_path / "reg" / "versions" / "v0007").mkdir(parents=True)
    assert registry.versions() == []
    with pytest.raises(AdapterError, match="incomplete"):
        registry.promote("v0007")
    (tmp_path / "reg" / "active.json").write_text("{broken")
    with pytest.raises(AdapterError, match="cannot read"):
        registry.active()
