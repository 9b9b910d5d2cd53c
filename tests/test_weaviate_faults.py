"""Weaviate going away, for real: a private server (scripts/weaviate.sh --data) killed with
SIGKILL in the middle of a sync and started again, and a server that is down while expertbot
serves, searches and syncs. Nothing may be lost, duplicated or hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from typer.testing import Result

from base.database import make_engine, sqlite_url
from base.errors import IndexStoreError
from bot.core.runtime import Core
from bot.server import Services, make_app
from knowledge.config import FolderSource, KnowledgeConfig
from knowledge.index.weaviate import WeaviateIndex
from knowledge.reports import SyncRunStore
from knowledge.runtime import Knowledge
from tests.helpers import HANDBOOK, WeaviateServer, run_cli, settings_for


async def cli(*args: str, env: dict[str, str]) -> Result:
    """The CLI from inside a test's event loop (it runs one of its own)."""
    return await asyncio.to_thread(run_cli, *args, env=env)


async def chunk_ids(server: WeaviateServer, collection: str) -> Counter[str]:
    """Every stored chunk's id, counted (a duplicate would count twice)."""
    index = WeaviateIndex(server.config(collection))
    await index.open(dim=384, model="all-MiniLM-L6-v2")
    ids: Counter[str] = Counter()
    async for obj in index._require().iterator(return_properties=["chunk_id"]):
        ids[str(obj.properties["chunk_id"])] += 1
    await index.close()
    return ids


async def test_kill_9_mid_sync_then_restart_and_sync_again_loses_and_duplicates_nothing(
    weaviate_server: WeaviateServer, tmp_path: Path, embedder: Any
) -> None:
    weaviate_server.start()
    config = KnowledgeConfig(
        store="weaviate",
        sources=[FolderSource(path=HANDBOOK, name="handbook")],
        weaviate=weaviate_server.config("Handbook"),
    )
    engine = make_engine(sqlite_url(tmp_path / "expertbot.db"))

    # The reference: the same handbook synced into LanceDB.
    lance = Knowledge.build(
        KnowledgeConfig(sources=config.sources),
        data_dir=tmp_path / "lance",
        engine=engine,
        embedder=embedder,
    )
    await lance.open(index=False)
    await lance.syncer.run()
    expected = {k: s.n_chunks for k, s in (await lance.index.manifest()).items()}
    await lance.close()

    knowledge = Knowledge.build(config, data_dir=tmp_path, engine=engine, embedder=embedder)
    knowledge.syncer.batch_docs = 3  # several writes, so the kill lands between two of them
    await knowledge.open(index=False)
    index = knowledge.index
    original = index.replace_documents
    writes = 0

    async def replace_then_die(records: Any) -> None:
        nonlocal writes
        writes += 1
        if writes == 3:
            weaviate_server.kill()
        await original(records)

    index.replace_documents = replace_then_die  # type: ignore[method-assign]
    began = time.monotonic()
    try:
        await knowledge.syncer.run()
        raise AssertionError("the sync went on with Weaviate killed")
    except IndexStoreError as exc:
        assert "Weaviate" in str(exc) and weaviate_server.url in str(exc)
    assert time.monotonic() - began < 30, "a dead Weaviate must not stall the sync"
    await knowledge.close()
    failed = knowledge.syncer.runs.last()
    assert failed is not None and failed.status == "failed"

    weaviate_server.start()  # same folder, same ports: the data written before the kill is there
    partial = await chunk_ids(weaviate_server, "Handbook")
    assert 0 < sum(partial.values()) < sum(expected.values())

    again = Knowledge.build(config, data_dir=tmp_path, engine=engine, embedder=embedder)
    await again.open(index=False)
    report = await again.syncer.run()
    assert report.status == "ok" and report.failed == 0
    manifest = await again.index.manifest()
    await again.close()
    engine.dispose()

    assert {k: s.n_chunks for k, s in manifest.items()} == expected
    assert all(s.complete and s.index_hash for s in manifest.values())
    ids = await chunk_ids(weaviate_server, "Handbook")
    assert sum(ids.values()) == sum(expected.values()) and set(ids.values()) == {1}


async def test_with_weaviate_down_readyz_search_and_sync_fail_clearly_and_the_next_sync_repairs(
    weaviate_server: WeaviateServer,
    tmp_path: Path,
    tiny_phi3: Path,
    embedder: Any,
    aiohttp_client: Any,
    clean_environ: Path,
) -> None:
    weaviate_server.start()
    env = weaviate_server.env("Served") | {"EXPERTBOT_DATA_DIR": str(clean_environ)}
    first = await cli("sync", str(HANDBOOK), "--json", env=env)
    assert first.exit_code == 0, first.output

    settings = settings_for(clean_environ, str(tiny_phi3))
    settings.knowledge.store = "weaviate"
    settings.knowledge.weaviate = weaviate_server.config("Served")
    core = Core.build(settings, embedder=embedder)
    await core.start()
    services = await Services.start(settings, core)
    client = await aiohttp_client(make_app(services))
    try:
        ready = await client.get("/readyz")
        assert ready.status == 200, await ready.text()

        weaviate_server.kill()
        began = time.monotonic()
        ready = await client.get("/readyz")
        body = await ready.json()
        assert ready.status == 503 and body["status"] == "not ready"
        assert body["checks"]["index"].startswith("unreachable: Weaviate")
        assert weaviate_server.url in body["checks"]["index"]
        assert body["checks"]["database"] == "ok"
        assert time.monotonic() - began < 10, "a readiness probe must answer quickly"

        searched = await cli("search", "How do I reset my password?", env=env)
        assert searched.exit_code != 0
        lines = searched.stderr.strip().splitlines()
        assert len(lines) == 1 and "Weaviate" in lines[0] and weaviate_server.url in lines[0]
        assert "Traceback" not in searched.output and searched.stdout == ""

        # The handbook changes while Weaviate is down: the sync fails, the next one catches up.
        docs = tmp_path / "kb"
        docs.mkdir()
        (docs / "new.md").write_text("# Parking\n\nThe garage code is 4711 for visitors.\n")
        failed = await cli("sync", str(HANDBOOK), str(docs), env=env)
        assert failed.exit_code != 0
        assert "Weaviate" in failed.stderr and "Traceback" not in failed.output
        last = SyncRunStore(core.knowledge.engine).last()
        assert last is not None and last.status == "failed" and "Weaviate" in (last.error or "")

        weaviate_server.start()
        repaired = await cli("sync", str(HANDBOOK), str(docs), "--json", env=env)
        assert repaired.exit_code == 0, repaired.output
        assert json.loads(repaired.stdout)["added"] == 1
        hits = json.loads((await cli("search", "visitor garage code", "--json", env=env)).stdout)
        assert hits[0]["doc"] == "new.md"

        ready = await client.get("/readyz")  # the serving process reconnects by itself
        assert ready.status == 200, await ready.text()
    finally:
        await core.close()
