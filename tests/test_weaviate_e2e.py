"""expertbot on a live Weaviate (EXPERTBOT_KNOWLEDGE__STORE=weaviate), as a user runs it: the
CLI on the example handbook, a Slack question answered from the Weaviate index through the fake
Web API, and the access rules enforced by Weaviate's own filters."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from knowledge.config import FolderSource
from tests.helpers import (
    HANDBOOK,
    WEAVIATE_API_KEY,
    WEAVIATE_GRPC_URL,
    WEAVIATE_URL,
    SlackEnv,
    needs_weaviate,
    run_cli,
    running_slack,
    settings_for,
    weaviate_config,
)

pytestmark = needs_weaviate

QUESTIONS = HANDBOOK.parent / "questions.jsonl"


def weaviate_env(collection: str) -> dict[str, str]:
    env = {
        "EXPERTBOT_KNOWLEDGE__STORE": "weaviate",
        "WEAVIATE_URL": WEAVIATE_URL,
        "EXPERTBOT_KNOWLEDGE__WEAVIATE__GRPC_URL": WEAVIATE_GRPC_URL,
        "EXPERTBOT_KNOWLEDGE__WEAVIATE__COLLECTION": collection,
    }
    return env | ({"WEAVIATE_API_KEY": WEAVIATE_API_KEY} if WEAVIATE_API_KEY else {})


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The handbook synced into a fresh Weaviate collection and, for comparison, into LanceDB."""
    collection = f"E2e{uuid.uuid4().hex[:10]}"
    weaviate_data = tmp_path_factory.mktemp("weaviate-e2e") / "data"
    lance_data = tmp_path_factory.mktemp("lance-e2e") / "data"
    env = weaviate_env(collection)
    first = run_cli("--data-dir", str(weaviate_data), "sync", str(HANDBOOK), "--json", env=env)
    assert first.exit_code == 0, first.output
    lance = run_cli("--data-dir", str(lance_data), "sync", str(HANDBOOK), "--json", env={})
    assert lance.exit_code == 0, lance.output
    yield {
        "env": env | {"EXPERTBOT_DATA_DIR": str(weaviate_data)},
        "lance_env": {"EXPERTBOT_DATA_DIR": str(lance_data)},
        "report": json.loads(first.stdout),
        "lance_report": json.loads(lance.stdout),
        "collection": collection,
    }

    import asyncio

    from knowledge.index.weaviate import WeaviateIndex

    async def drop() -> None:
        index = WeaviateIndex(weaviate_config(collection))
        await index.drop()
        await index.close()

    asyncio.run(drop())


def test_sync_fills_weaviate_like_lancedb_and_a_second_sync_changes_nothing(synced: Any) -> None:
    report, lance = synced["report"], synced["lance_report"]
    assert report["status"] == "ok" and report["store"] == "weaviate"
    assert (report["added"], report["chunks_written"]) == (lance["added"], lance["chunks_written"])
    again = run_cli("sync", str(HANDBOOK), env=synced["env"])
    assert again.exit_code == 0, again.output
    assert f"0 added, 0 updated, 0 deleted, {report['added']} unchanged" in again.stdout


def test_index_status_names_weaviate_and_counts_what_lancedb_counts(synced: Any) -> None:
    status = json.loads(run_cli("index", "status", "--json", env=synced["env"]).stdout)
    lance = json.loads(run_cli("index", "status", "--json", env=synced["lance_env"]).stdout)
    assert status["store"] == "weaviate" and status["location"] == WEAVIATE_URL
    assert (status["documents"], status["chunks"]) == (lance["documents"], lance["chunks"])


def test_search_finds_the_right_document_and_public_only_hides_private_ones(synced: Any) -> None:
    env = synced["env"]
    hits = json.loads(run_cli("search", "How do I reset my password?", "--json", env=env).stdout)
    assert hits[0]["doc"] == "it/help-desk.md" and hits[0]["uri"].startswith("file://")
    question = "What is the bonus target for a director?"
    everything = json.loads(run_cli("search", question, "--json", env=env).stdout)
    public = json.loads(run_cli("search", question, "--json", "--public-only", env=env).stdout)
    assert everything[0]["doc"] == "people/compensation-bands.md"
    assert public and all(h["access"] == "public" for h in public)


def test_eval_retrieval_on_weaviate_agrees_with_lancedb_for_vector_search(synced: Any) -> None:
    def evaluate(env: dict[str, str]) -> dict[str, Any]:
        result = run_cli("eval", "retrieval", str(QUESTIONS), "--mode", "all", "--json", env=env)
        assert result.exit_code == 0, result.output
        return {m["mode"]: m for m in json.loads(result.stdout)}

    weaviate, lance = evaluate(synced["env"]), evaluate(synced["lance_env"])
    # The same vectors, exact neighbours on a small collection: the same ranking.
    assert weaviate["vector"]["mrr"] == pytest.approx(lance["vector"]["mrr"], abs=1e-3)
    recall = f"recall@{weaviate['vector']['k']}"
    assert weaviate["vector"][recall] == lance["vector"][recall]
    # BM25 and fusion are each engine's own; both must still find most documents.
    for mode in ("hybrid", "keyword"):
        assert weaviate[mode][recall] >= 0.8, (mode, weaviate[mode][recall])


def test_ask_answers_from_weaviate(synced: Any, tiny_phi3: Path) -> None:
    env = synced["env"] | {
        "EXPERTBOT_MODEL__BASE": str(tiny_phi3),
        "EXPERTBOT_MODEL__MAX_NEW_TOKENS": "6",
    }
    result = run_cli("ask", "How do I reset my password?", "--json", env=env)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["abstained"] is False
    assert any(p["uri"].endswith("it/help-desk.md") for p in answer["passages"])


# --- Slack on the Weaviate index ----------------------------------------------------------------


@pytest.fixture
async def slack_env(
    synced: Any, clean_environ: Path, tiny_phi3: Path, embedder: Any, aiohttp_client: Any
) -> AsyncIterator[SlackEnv]:
    settings = settings_for(clean_environ, str(tiny_phi3))
    settings.knowledge.store = "weaviate"
    settings.knowledge.weaviate = weaviate_config(synced["collection"])
    settings.knowledge.sources = [FolderSource(path=HANDBOOK, name="handbook")]
    async with running_slack(settings, embedder, aiohttp_client) as env:
        yield env


async def test_a_slack_question_is_answered_from_the_weaviate_index(slack_env: SlackEnv) -> None:
    ts, stop = await slack_env.ask("How do I reset my password?")
    answer_id = await slack_env.linked("CPUBLIC", stop.body["ts"])
    row = slack_env.core.store.get_answer(answer_id)
    assert row is not None and row.thread == ts and not row.abstained
    assert "it/help-desk.md" in {r.doc for r in row.retrieved}
    ready = await slack_env.client.get("/readyz")
    checks = (await ready.json())["checks"]
    assert ready.status == 200 and checks["index"].endswith(" chunks")


async def test_a_public_channel_never_gets_private_documents_from_weaviate(
    slack_env: SlackEnv,
) -> None:
    _, stop = await slack_env.ask("What is the bonus target for a director and the salary bands?")
    answer_id = await slack_env.linked("CPUBLIC", stop.body["ts"])
    row = slack_env.core.store.get_answer(answer_id)
    assert row is not None
    assert row.retrieved, "the public handbook still has passages to show"
    docs = {r.doc for r in row.retrieved}
    assert "people/compensation-bands.md" not in docs and "finance/quarter-close.md" not in docs
    text = json.dumps([c.body for c in slack_env.slack.calls])
    assert "compensation-bands" not in text
