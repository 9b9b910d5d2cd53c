"""Shared fixtures: a clean environment per test, real models and stores.

- Every test starts with no EXPERTBOT_* / WEAVIATE_* variables and its own data dir.
- `embedder` is the real default embedding model, loaded once per session; it memoises the
  vectors of texts it has already embedded (the model still computes each text once).
- `database_url` runs a test on SQLite and on the PostgreSQL server that scripts/postgres.sh
  started (TEST_POSTGRES_URL), each in a fresh schema.
- `index_factory` runs a test on both index backends: LanceDB and the live Weaviate that
  scripts/weaviate.sh started (WEAVIATE_URL).
- Without a service (a laptop without apt or Go) its tests show as skipped and the run ends with
  a loud NOT TESTED line; in CI (CI set) the run fails instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from base.database import make_engine, sqlite_url
from knowledge.config import EmbeddingConfig, FolderSource, KnowledgeConfig
from knowledge.embedding import SentenceTransformerEmbedder
from knowledge.index.base import KnowledgeIndex
from tests.helpers import (
    HANDBOOK,
    IN_CI,
    NO_POSTGRES,
    NO_WEAVIATE,
    POSTGRES_URL,
    ROOT,
    WEAVIATE_URL,
    WeaviateServer,
    needs_postgres,
    needs_weaviate,
    postgres_schema,
    weaviate_config,
)

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"


def pytest_report_header(config: pytest.Config) -> list[str]:
    weaviate = f"weaviate ({WEAVIATE_URL})" if WEAVIATE_URL else "weaviate NOT TESTED"
    return [
        f"index contract backends: lancedb, {weaviate}",
        f"postgres: {POSTGRES_URL or 'NOT TESTED'}",
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    # In CI every test must run: a missing service is a failure, never a quiet skip.
    missing = [m for m, ok in ((NO_POSTGRES, POSTGRES_URL), (NO_WEAVIATE, WEAVIATE_URL)) if not ok]
    if IN_CI and missing:
        pytest.exit("CI needs every service: " + "; ".join(missing), returncode=1)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for message, ok in ((NO_POSTGRES, POSTGRES_URL), (NO_WEAVIATE, WEAVIATE_URL)):
        if not ok:
            terminalreporter.write_sep("!", f"NOT TESTED — {message}", red=True, bold=True)


@pytest.fixture
def weaviate_server(tmp_path: Path) -> Iterator[WeaviateServer]:
    """A private Weaviate for this test, stopped afterwards (start it with `.start()`)."""
    if not WEAVIATE_URL:
        pytest.skip(NO_WEAVIATE)
    if not shutil.which("go") and not IN_CI:  # a Weaviate of your own, but no Go to build one
        pytest.skip("a private Weaviate is built by scripts/weaviate.sh, which needs Go")
    server = WeaviateServer(tmp_path / "weaviate")
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in list(os.environ):
        if var.startswith(("EXPERTBOT_", "WEAVIATE_")):
            monkeypatch.delenv(var)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("EXPERTBOT_DATA_DIR", str(data_dir))
    monkeypatch.chdir(tmp_path)
    return data_dir


class MemoEmbedder:
    """The real embedder, remembering vectors of texts it has embedded in this session."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dim = inner.dim
        self.max_tokens = inner.max_tokens
        self._docs: dict[str, np.ndarray] = {}
        self._queries: dict[str, np.ndarray] = {}
        self.calls: list[int] = []

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        missing = [t for t in dict.fromkeys(texts) if t not in self._docs]
        if missing:
            for text, vector in zip(missing, self.inner.embed_documents(missing), strict=True):
                self._docs[text] = vector
        return (
            np.stack([self._docs[t] for t in texts])
            if texts
            else np.zeros((0, self.dim), np.float32)
        )

    def embed_query(self, text: str) -> np.ndarray:
        if text not in self._queries:
            self._queries[text] = self.inner.embed_query(text)
        return self._queries[text]


@pytest.fixture(scope="session")
def real_embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(EmbeddingConfig())


@pytest.fixture
def embedder(real_embedder: SentenceTransformerEmbedder) -> MemoEmbedder:
    memo = _SESSION_MEMO.setdefault("memo", MemoEmbedder(real_embedder))
    memo.calls = []
    return memo


_SESSION_MEMO: dict[str, MemoEmbedder] = {}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=needs_postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "data" / "expertbot.db")
        return
    url, schema = postgres_schema()
    yield url
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.engine.Engine]:
    """SQLite store for tests that are not about the database itself."""
    eng = make_engine(sqlite_url(tmp_path / "data" / "expertbot.db"))
    yield eng
    eng.dispose()


@pytest.fixture(params=["lancedb", pytest.param("weaviate", marks=needs_weaviate)])
def index_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., KnowledgeIndex]]:
    """Makes fresh, unopened indexes of one backend; cleans up what it made."""
    from knowledge.index.lancedb import LanceIndex
    from knowledge.index.weaviate import WeaviateIndex

    made: list[WeaviateIndex] = []

    def make(name: str = "main") -> KnowledgeIndex:
        if request.param == "lancedb":
            return LanceIndex(tmp_path / f"lance-{name}")
        index = WeaviateIndex(weaviate_config())
        made.append(index)
        return index

    yield make
    if made:
        import asyncio

        async def _drop() -> None:
            for index in made:
                with contextlib.suppress(Exception):
                    await index.drop()
                await index.close()

        asyncio.run(_drop())


@pytest.fixture
def handbook(tmp_path: Path) -> Path:
    """A private copy of the example handbook that a test may change."""
    dest = tmp_path / "handbook"
    shutil.copytree(HANDBOOK, dest)
    return dest


@pytest.fixture
def knowledge_config(handbook: Path) -> KnowledgeConfig:
    return KnowledgeConfig(sources=[FolderSource(path=handbook, name="handbook")])


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random-weight Phi-3 with the real Phi-3 tokenizer and chat template."""
    from tests.models import build_tiny_phi3

    return build_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3"))


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the offline demo model (SmolLM2-135M-Instruct), converted once per
    session (about 40 s): `ModelConfig(base="demo")` with this data dir loads it in a second."""
    from training.serving.demo import prepare_demo_model

    data_dir = tmp_path_factory.mktemp("demo-model")
    prepare_demo_model(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def tiny_adapters(tiny_phi3: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two different LoRA adapters for the tiny Phi-3 (random, non-zero weights)."""
    from tests.models import make_lora_adapter

    root = tmp_path_factory.mktemp("adapters")
    return [make_lora_adapter(tiny_phi3, root / f"a{seed}", seed=seed) for seed in (1, 2)]


RECORDED_RUN = ROOT / "tests" / "assets" / "recorded_training_run.json"


@pytest.fixture
def recorded_training(monkeypatch: pytest.MonkeyPatch, tiny_adapters: list[Path]) -> None:
    """The learning loop with its training worker replayed from a recording: the events and
    scores of a real QLoRA run of the tiny Phi-3 on twelve expert corrections
    (tests/assets/recorded_training_run.json), and a real tiny LoRA adapter as its output.
    The gate, the report and loss curve, the registry and every announcement run for real;
    tests/test_training.py trains for real."""
    import copy
    import json

    import training.learning.pipeline as pipeline

    recorded = json.loads(RECORDED_RUN.read_text())

    async def replay(spec: Any, run_dir: Path, *, timeout_s: float, **hooks: Any) -> Any:
        on_event = hooks.get("on_event")
        for event in recorded["events"]:
            if on_event is not None:
                on_event(event)
        shutil.copytree(tiny_adapters[0], spec.output)
        return copy.deepcopy(recorded["result"])

    monkeypatch.setattr(pipeline, "run_worker", replay)


@pytest.fixture(scope="session")
def synced_handbook(
    tmp_path_factory: pytest.TempPathFactory, real_embedder: SentenceTransformerEmbedder
) -> Path:
    """A LanceDB index of the example handbook, synced once per session (read-only for tests:
    copy it with `handbook_index`)."""
    import asyncio

    from knowledge.runtime import Knowledge

    data_dir = tmp_path_factory.mktemp("handbook-index")
    config = KnowledgeConfig(sources=[FolderSource(path=HANDBOOK, name="handbook")])
    engine = make_engine(sqlite_url(data_dir / "expertbot.db"))
    memo = _SESSION_MEMO.setdefault("memo", MemoEmbedder(real_embedder))

    async def sync() -> None:
        knowledge = Knowledge.build(config, data_dir=data_dir, engine=engine, embedder=memo)
        await knowledge.open(index=False)
        await knowledge.syncer.run()
        await knowledge.close()

    asyncio.run(sync())
    engine.dispose()
    return data_dir


@pytest.fixture
def handbook_data_dir(synced_handbook: Path, clean_environ: Path) -> Path:
    """This test's data dir, holding a copy of the synced handbook index and SQL store."""
    shutil.copytree(synced_handbook, clean_environ)
    return clean_environ
