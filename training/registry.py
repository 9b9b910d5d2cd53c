"""The adapter registry: a folder of LoRA adapter versions and which one serves.

    <root>/versions/<version>/   adapter_config.json, adapter_model.safetensors, meta.json
    <root>/active.json           {"version": "v0003", "history": ["v0001", "v0003"], ...}

`meta.json` records what the version was trained from (base model, data hash, training
config, metrics, parent). Writes are atomic (temporary file or folder, then rename), so a
reader — the serving generator polling for promotions, on this or another replica sharing the
folder — never sees half a version. The learning loop adds versions and promotes them;
`rollback` returns to the previous one (or to the base model).

Training runs are recorded beside the versions, whatever their outcome:

    <root>/runs/<run>/run.json   status (running, promoted, rejected, failed, skipped), reason,
                                 version, example keys, timings; the worker's files beside it

so a failed run is reported and kept for inspection, and the next run can tell how much of its
training set is new.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from base.errors import AdapterError

ADAPTER_FILES = ("adapter_config.json",)
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    version: str
    path: Path
    meta: dict[str, Any]

    @property
    def created_at(self) -> str | None:
        value = self.meta.get("created_at")
        return str(value) if value else None

    @property
    def base(self) -> str | None:
        value = self.meta.get("base")
        return str(value) if value else None


class AdapterRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def _versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def _active_file(self) -> Path:
        return self.root / "active.json"

    def path(self, version: str) -> Path:
        _check_name(version)
        return self._versions_dir / version

    def versions(self) -> list[AdapterVersion]:
        """Every complete version, oldest first."""
        if not self._versions_dir.is_dir():
            return []
        found = []
        for child in self._versions_dir.iterdir():
            if child.name.startswith(".") or not _VERSION.match(child.name):
                continue
            if all((child / f).is_file() for f in ADAPTER_FILES):
                found.append(AdapterVersion(child.name, child, _read_json(child / "meta.json")))
        return sorted(found, key=lambda v: (v.created_at or "", v.version))

    def get(self, version: str) -> AdapterVersion:
        path = self.path(version)
        if not path.is_dir():
            raise AdapterError(f"no adapter version {version!r} in {self._versions_dir}")
        missing = [f for f in ADAPTER_FILES if not (path / f).is_file()]
        if missing:
            raise AdapterError(f"adapter version {version!r} is incomplete (no {missing[0]})")
        return AdapterVersion(version, path, _read_json(path / "meta.json"))

    def next_version(self) -> str:
        numbers = [int(v.version[1:]) for v in self.versions() if re.fullmatch(r"v\d+", v.version)]
        return f"v{max(numbers, default=0) + 1:04d}"

    def add(
        self, source: Path, *, meta: dict[str, Any] | None = None, version: str | None = None
    ) -> AdapterVersion:
        """Copy a saved PEFT adapter folder in as a new version (not promoted)."""
        if not all((source / f).is_file() for f in ADAPTER_FILES):
            raise AdapterError(f"{source} is not a saved adapter (no adapter_config.json)")
        version = version or self.next_version()
        dest = self.path(version)
        if dest.exists():
            raise AdapterError(f"adapter version {version!r} already exists")
        self._versions_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self._versions_dir))
        try:
            shutil.copytree(source, work, dirs_exist_ok=True)
            record = {"version": version, "created_at": _now(), **(meta or {})}
            (work / "meta.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
            os.replace(work, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return self.get(version)

    def state(self) -> dict[str, Any]:
        return _read_json(self._active_file)

    def active(self) -> str | None:
        """The version that serves (None: the base model)."""
        value = self.state().get("version")
        return str(value) if value else None

    def promote(self, version: str, *, reason: str = "promoted") -> None:
        self.get(version)
        state = self.state()
        history = [v for v in state.get("history", []) if v != version]
        history.append(version)
        self._write_state(version, history, reason)

    def rollback(self, to: str | None = None) -> str | None:
        """Serve `to`, or the version promoted before the active one (None: the base model).
        Returns what serves now."""
        state = self.state()
        history: list[str] = list(state.get("history", []))
        current = state.get("version")
        if to is not None:
            self.get(to)
            target: str | None = to
        else:
            if current is None:
                raise AdapterError("nothing to roll back: the base model is serving")
            if current in history:
                history = history[: history.index(current)]
            target = history[-1] if history else None
        if target is not None and target in history:
            history = history[: history.index(target) + 1]
        elif target is not None:
            history.append(target)
        self._write_state(target, history, "rollback")
        return target

    def _write_state(self, version: str | None, history: list[str], reason: str) -> None:
        record = {"version": version, "history": history, "changed_at": _now(), "reason": reason}
        _write_json(self._active_file, record)

    # -- runs ---------------------------------------------------------------------------------

    @property
    def _runs_dir(self) -> Path:
        return self.root / "runs"

    def start_run(self, **fields: Any) -> Path:
        """A new run folder with `run.json` (status running); returns the folder."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        run_dir = self._runs_dir / f"r-{stamp}-{secrets.token_hex(3)}"
        run_dir.mkdir(parents=True)
        record = {"run": run_dir.name, "status": "running", "started_at": _now(), **fields}
        _write_json(run_dir / "run.json", record)
        return run_dir

    def finish_run(self, run_dir: Path, status: str, **fields: Any) -> dict[str, Any]:
        record = _read_json(run_dir / "run.json") | fields
        record.update(status=status, finished_at=_now())
        _write_json(run_dir / "run.json", record)
        return record

    def runs(self) -> list[dict[str, Any]]:
        """Every recorded run, oldest first (a run whose process died shows as running until
        the next run sees its lock free; see `Ops.train`)."""
        if not self._runs_dir.is_dir():
            return []
        found = []
        for child in sorted(self._runs_dir.iterdir()):
            record = _read_json(child / "run.json") if child.is_dir() else {}
            if record:
                found.append(record | {"path": str(child)})
        return sorted(found, key=lambda r: (str(r.get("started_at")), str(r.get("run"))))

    def last_trained_run(self) -> dict[str, Any] | None:
        """The latest run that trained a candidate (promoted or not)."""
        trained = [r for r in self.runs() if r.get("status") in ("promoted", "rejected")]
        return trained[-1] if trained else None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def _check_name(version: str) -> None:
    if not _VERSION.match(version):
        raise AdapterError(f"not a valid adapter version name: {version!r}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
