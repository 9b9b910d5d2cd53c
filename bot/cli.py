"""expertbot's command line. Every command is a thin wrapper over a library function."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from base.database import make_engine, redact_url
from base.errors import AlreadyRunningError, ConfigError, ExpertbotError, SourceError
from base.migrations import migrate_all
from bot.core.knowledge import knowledge_for
from bot.core.question import Answer, Question, Where, WhereKind
from bot.logging import configure_logging
from bot.settings import Settings, load_settings
from knowledge.config import FolderSource, SourceConfig
from knowledge.connectors.base import Entry
from knowledge.evaluation import (
    RetrievalMetrics,
    RetrievalOutcome,
    evaluate_passages,
    evaluate_retrieval,
    load_cases,
)
from knowledge.models import Access, AccessScope, Hit, SearchFilters
from knowledge.reports import SyncReport
from knowledge.runtime import Knowledge
from knowledge.search import MODES
from knowledge.sources import SourceStatus, probe, source_statuses

log = structlog.get_logger("expertbot.cli")
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

EXIT_ERROR = 1
EXIT_ALREADY_RUNNING = 3
EXIT_INTERNAL = 70

app = typer.Typer(
    name="expertbot",
    help="The expert bot of your company: answers from your documents, learns from your experts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
index_app = typer.Typer(help="Inspect the knowledge index.", no_args_is_help=True)
eval_app = typer.Typer(
    help="Measure retrieval and answer quality on your own questions.", no_args_is_help=True
)
app.add_typer(index_app, name="index")
app.add_typer(eval_app, name="eval")
dataset_app = typer.Typer(help="The training set built from expert feedback.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
answerability_app = typer.Typer(
    help="The classifier that decides when to abstain.", no_args_is_help=True
)
app.add_typer(answerability_app, name="answerability")
adapters_app = typer.Typer(
    help="The fine-tuned adapter versions: which serves, promote, roll back.", no_args_is_help=True
)
app.add_typer(adapters_app, name="adapters")


class _State:
    def __init__(self) -> None:
        self.config_file: Path | None = None
        self.overrides: dict[str, Any] = {}
        self.default_log_level = "warning"  # the server logs at info


state = _State()


@app.callback()
def _main(
    config: Path | None = typer.Option(
        None, "--config", help="TOML config file (default: $EXPERTBOT_CONFIG or ./expertbot.toml)."
    ),
    data_dir: Path | None = typer.Option(
        None,
        "--data-dir",
        help="Where embedded stores live (default: $EXPERTBOT_DATA_DIR or ./.expertbot).",
    ),
    log_level: str | None = typer.Option(
        None, "--log-level", help="debug, info, warning or error."
    ),
) -> None:
    state.config_file = config
    state.overrides = {"data_dir": data_dir, "log_level": log_level}


T = TypeVar("T")


def _run(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Load settings, configure logging, run the coroutine; domain errors become one clear line."""
    try:
        settings = load_settings(config_file=state.config_file, overrides=state.overrides)
    except ExpertbotError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True)
        raise typer.Exit(EXIT_ERROR) from None
    configure_logging(settings.log_level or state.default_log_level, settings.log_format)
    try:
        return asyncio.run(work(settings))
    except AlreadyRunningError as exc:
        err.print(f"[yellow]{escape(str(exc))}[/yellow]", markup=True)
        raise typer.Exit(EXIT_ALREADY_RUNNING) from None
    except ExpertbotError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True)
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception:
        crash = _write_crash_log(settings.data_dir)
        err.print(
            f"[red]internal error[/red]: this is a bug; details are in {escape(str(crash))}",
            markup=True,
        )
        raise typer.Exit(EXIT_INTERNAL) from None


def _write_crash_log(data_dir: Path) -> Path:
    path = data_dir / "logs" / "crash.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"--- {datetime.now().isoformat()} expertbot {' '.join(sys.argv[1:])}\n")
            fh.write(traceback.format_exc())
    except OSError:
        return Path("(crash log could not be written)")
    return path


def _knowledge(settings: Settings) -> Knowledge:
    return knowledge_for(settings)


def _sources_for(
    paths: list[Path], names: list[str], settings: Settings
) -> list[SourceConfig] | None:
    """The sources a sync reads: the named ones, folders given on the command line (as
    configured, if they are), or every configured one (None)."""
    if names and paths:
        raise ConfigError("give folders or --source names, not both")
    if names:
        return [settings.knowledge.source(name) for name in names]
    if not paths:
        return None
    configured = {
        s.path.resolve(): s for s in settings.knowledge.sources if isinstance(s, FolderSource)
    }
    return [configured.get(p.resolve()) or FolderSource(path=p) for p in paths]


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@app.command()
def sync(
    paths: list[Path] = typer.Argument(
        None, help="Folders to sync (default: the configured sources)."
    ),
    source: list[str] = typer.Option(
        None, "--source", help="Only the configured source of this name (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the sync report as JSON."),
    wait: bool = typer.Option(
        False, "--wait", help="If a sync is running, wait for it to end first."
    ),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Drop the index and re-embed everything."
    ),
) -> None:
    """Sync the index with the documents: add new, re-embed changed, delete removed ones.
    Every configured source (and the experts' answers), or only those named by --source.
    Exits 1 when a source could not be read (the others are synced; its documents stay)."""

    async def work(settings: Settings) -> SyncReport:
        if rebuild and source:
            raise ConfigError("--rebuild re-reads every source: leave out --source")
        sources = _sources_for(paths or [], source or [], settings)
        knowledge = _knowledge(settings)
        await knowledge.open(index=False)
        try:
            return await _sync_with_progress(knowledge, sources, not source, wait, rebuild, as_json)
        finally:
            await knowledge.close()

    report = _run(work)
    if as_json:
        _print_json(report.as_json())
    else:
        for item in report.items:
            if item.action in ("skipped", "failed"):
                err.print(f"  {item.action}: {item.source}:{item.doc_id}: {item.reason}")
        out.print(report.summary())
    if report.failed_sources:
        raise typer.Exit(EXIT_ERROR)


async def _sync_with_progress(
    knowledge: Knowledge,
    sources: list[SourceConfig] | None,
    feeds: bool,
    wait: bool,
    rebuild: bool,
    quiet: bool,
) -> SyncReport:
    if quiet or not err.is_terminal:
        return await knowledge.syncer.run(sources, feeds=feeds, wait=wait, rebuild=rebuild)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("syncing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, doc_id: str) -> None:
            bar.update(task, completed=done, total=total or None, description=doc_id[-50:])

        return await knowledge.syncer.run(
            sources, feeds=feeds, wait=wait, rebuild=rebuild, progress=progress
        )


sources_app = typer.Typer(help="The document sources: what each holds, and checks.")
app.add_typer(sources_app, name="sources")


@sources_app.command("list")
def sources_list(
    as_json: bool = typer.Option(False, "--json", help="Print the sources as JSON."),
) -> None:
    """Every configured source: its type, where it reads, its last sync, the documents it listed
    then and the age of its cursor."""

    async def work(settings: Settings) -> list[SourceStatus]:
        engine = make_engine(settings.resolved_database_url)
        try:
            await asyncio.to_thread(migrate_all, engine)
            return await asyncio.to_thread(source_statuses, settings.knowledge, engine)
        finally:
            engine.dispose()

    rows = _run(work)
    if as_json:
        _print_json([row.as_json() for row in rows])
        return
    if not rows:
        out.print("no sources configured (knowledge.sources in expertbot.toml)")
        return
    for row in rows:
        when = row.last_sync.strftime("%Y-%m-%d %H:%M UTC") if row.last_sync else "never synced"
        docs = f"{row.documents} documents" if row.documents is not None else "no documents yet"
        age = f", cursor {_age(row.cursor_age_s)} old" if row.cursor_age_s is not None else ""
        failed = f" — last sync failed: {row.error}" if row.error else ""
        out.print(
            f"{row.name}  ({row.type}, {row.access})  {row.location}\n"
            f"    {when}: {docs}{age}{failed}",
            markup=False,
        )


@sources_app.command("test")
def sources_test(
    name: str = typer.Argument(..., help="The source's name (`expertbot sources list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check that a source can be read: list up to 5 of its documents (nothing is indexed).
    Exits 0 when it can, 1 with the reason when it cannot."""

    async def work(settings: Settings) -> tuple[SourceConfig, list[Entry] | str]:
        source = settings.knowledge.source(name)
        try:
            return source, await probe(source, max_bytes=settings.knowledge.max_file_bytes)
        except SourceError as exc:
            return source, str(exc)

    source, found = _run(work)
    if isinstance(found, str):
        if as_json:
            _print_json({"name": source.source_name, "ok": False, "error": found})
        else:
            err.print(f"{source.source_name}: cannot be read: {found}", markup=False)
        raise typer.Exit(EXIT_ERROR)
    if as_json:
        _print_json(
            {
                "name": source.source_name,
                "ok": True,
                "documents": [
                    {"id": e.doc_id, "title": e.title, "uri": e.uri, "size": e.size} for e in found
                ],
            }
        )
        return
    out.print(
        f"{source.source_name}: ok, {source.type} source {source.location} lists "
        f"{len(found) if found else 'no'} document{'s' if len(found) != 1 else ''}"
        f"{' (the first 5)' if len(found) == 5 else ''}",
        markup=False,
    )
    for entry in found:
        out.print(f"  {entry.doc_id}  {entry.uri}", markup=False)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86_400:.0f} days"


@app.command()
def search(
    query: str = typer.Argument(..., help="What to look for."),
    k: int = typer.Option(
        None, "-k", min=1, max=100, help="How many hits (default: knowledge.search.k)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as JSON."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, vector or keyword."),
    public_only: bool = typer.Option(False, "--public-only", help="Search public documents only."),
    source: list[str] = typer.Option(None, "--source", help="Only these sources (repeatable)."),
) -> None:
    """Search the knowledge index (hybrid: vector + keyword) and show the best passages."""

    async def work(settings: Settings) -> list[Any]:
        knowledge = _knowledge(settings)
        await knowledge.open()
        try:
            filters = SearchFilters(
                scope=AccessScope.public_only() if public_only else None,
                sources=frozenset(source) if source else None,
            )
            return await knowledge.search.search(query, k=k, filters=filters, mode=mode)  # type: ignore[arg-type]
        finally:
            await knowledge.close()

    hits = _run(work)
    if as_json:
        _print_json([h.as_json() for h in hits])
        return
    if not hits:
        out.print("no results (is the index empty? run `expertbot sync`)")
        return
    for n, hit in enumerate(hits, start=1):
        where = f" › {hit.heading}" if hit.heading else ""
        label = "" if hit.access == Access.PUBLIC else f" [{hit.access}]"
        out.print(
            f"[bold]\\[{n}] {escape(hit.title + where)}[/bold]{escape(label)}  (score {hit.score:.4f})",
            markup=True,
        )
        out.print(f"    {hit.uri}", style="dim")
        snippet = " ".join(hit.text.split())
        out.print(f"    {snippet[:300]}{'…' if len(snippet) > 300 else ''}")


@eval_app.command("retrieval")
def eval_retrieval(
    file: Path = typer.Argument(..., help='JSON lines: {"question": ..., "doc": <document id>}.'),
    k: int = typer.Option(5, "-k", min=1, max=100, help="Recall@k cut-off, in documents."),
    as_json: bool = typer.Option(
        False, "--json", help="Print metrics and per-question ranks as JSON."
    ),
    mode: str = typer.Option(
        "hybrid",
        "--mode",
        help="hybrid (what serving searches), vector, keyword, passages (what the model is "
        "given), or all.",
    ),
) -> None:
    """Recall@1/5/10/k, MRR and nDCG@10 of the gold document(s) for each question in FILE,
    counted in distinct documents (four chunks of one page are one document)."""
    every = [*MODES, "passages"]
    modes = every if mode == "all" else [mode]

    async def work(settings: Settings) -> list[tuple[RetrievalMetrics, list[RetrievalOutcome]]]:
        if mode not in (*every, "all"):
            raise ConfigError(f"--mode must be one of {', '.join(every)} or all, not {mode!r}")
        cases = load_cases(file)
        # The generator judge reranks with the serving model: then the model is loaded too.
        core = _core(settings) if settings.knowledge.rerank.kind == "generator" else None
        knowledge = core.knowledge if core is not None else _knowledge(settings)
        if core is not None:
            await core.start()
        else:
            await knowledge.open()
        search = knowledge.search

        async def passages(question: str) -> list[Hit]:
            # What the answering core hands the model (before it merges neighbouring chunks,
            # which keeps their documents).
            retrieval = await search.retrieve(question, k=settings.answer.passages)
            return retrieval.hits

        try:
            results = []
            for m in modes:
                if m == "passages":
                    results.append(await evaluate_passages(cases, passages, k=k))
                else:
                    results.append(await evaluate_retrieval(search, cases, k=k, mode=m))  # type: ignore[arg-type]
            return results
        finally:
            await (core.close() if core is not None else knowledge.close())

    results = _run(work)
    if as_json:
        _print_json(
            [
                {
                    **metrics.as_json(),
                    "results": [
                        {
                            "question": o.case.question,
                            "gold": sorted(o.case.docs),
                            "rank": o.rank,
                            "top": o.top_docs,
                        }
                        for o in outcomes
                    ],
                }
                for metrics, outcomes in results
            ]
        )
        return
    cuts = sorted({1, 5, 10, k})
    header = " ".join(f"{f'R@{c}':>6}" for c in cuts)
    out.print(f"{'mode':<9} {'questions':>9} {header} {'MRR':>6} {'nDCG@10':>7}")
    for metrics, _ in results:
        recall = " ".join(f"{metrics.recall[c]:>6.3f}" for c in cuts)
        out.print(
            f"{metrics.mode:<9} {metrics.questions:>9} {recall} {metrics.mrr:>6.3f} "
            f"{metrics.ndcg_at_10:>7.3f}"
        )


@index_app.command("status")
def index_status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Documents, chunks, the last sync, the store and the embedding model."""

    async def work(settings: Settings) -> dict[str, Any]:
        knowledge = _knowledge(settings)
        await knowledge.open()
        try:
            stats, last = await knowledge.status()
        finally:
            await knowledge.close()
        return {
            "store": stats.store,
            "location": stats.location,
            "documents": stats.documents,
            "chunks": stats.chunks,
            "ann_index": stats.ann_index,
            "embedding_model": knowledge.embedder.model_name,
            "embedding_dim": knowledge.embedder.dim,
            "database": redact_url(settings.resolved_database_url),
            "last_sync": last.as_json() | {"items": len(last.items)} if last else None,
        }

    status = _run(work)
    if as_json:
        _print_json(status)
        return
    out.print(f"store:      {status['store']} ({status['location']})")
    out.print(f"documents:  {status['documents']}")
    out.print(f"chunks:     {status['chunks']}" + ("  (ANN index)" if status["ann_index"] else ""))
    out.print(f"embedding:  {status['embedding_model']} ({status['embedding_dim']}-d)")
    out.print(f"database:   {status['database']}")
    last = status["last_sync"]
    if last:
        out.print(
            f"last sync:  {last['finished_at'] or last['started_at']} {last['status']}: "
            f"{last['added']} added, {last['updated']} updated, {last['deleted']} deleted, "
            f"{last['unchanged']} unchanged, {last['skipped']} skipped, {last['failed']} failed"
        )
    else:
        out.print("last sync:  never (run `expertbot sync`)")


def _core(settings: Settings) -> Any:
    from bot.core.runtime import Core

    return Core.build(settings)


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question, in quotes."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer and sources as JSON."),
    where: WhereKind = typer.Option(
        WhereKind.PUBLIC,
        "--where",
        help="Ask as if in a public channel, a private channel or a DM (decides which "
        "documents may be used).",
        case_sensitive=False,
    ),
    channel: str | None = typer.Option(None, "--channel", help="The channel id, e.g. C0FINANCE."),
    user: str = typer.Option("cli", "--user", help="Ask as this user id (DM access rules)."),
) -> None:
    """Answer a question from the knowledge, streaming the answer, then its sources."""
    stream_out = not as_json

    async def work(settings: Settings) -> Answer:
        core = _core(settings)
        if stream_out and err.is_terminal:
            err.print("loading the model …", style="dim", end="\r")
        await core.start()
        try:
            final: Answer | None = None
            shown: list[str] = []
            q = Question(question, asker=user, where=Where(where, channel=channel))
            async for item in core.answerer.stream(q):
                if isinstance(item, Answer):
                    final = item
                elif stream_out:
                    shown.append(item)
                    sys.stdout.write(item)
                    sys.stdout.flush()
            assert final is not None
            if stream_out and shown and "".join(shown).strip() != final.text.strip():
                # What streamed was replaced (a loop stopped mid-way, quoted instead): a terminal
                # cannot take it back, so the answer that counts follows it, marked.
                sys.stdout.write(f"\n\n[replaced by]\n{final.text}")
            if final.abstained and (await core.knowledge.index.stats()).chunks == 0:
                err.print("the index is empty: run `expertbot sync PATH` first", style="yellow")
            return final
        finally:
            await core.close()

    answer = _run(work)
    if as_json:
        _print_json(answer.as_json())
        return
    sys.stdout.write("\n")
    if answer.sources:
        out.print("\nSources:")
        for source in answer.sources:
            heading = f" › {source.heading}" if source.heading else ""
            out.print(f"  [{source.number}] {source.title}{heading}  {source.uri}")
    elif answer.passages and not answer.abstained:
        # Small models often cite nothing: show what the answer was written from, said as such.
        out.print("\nWritten from these passages (the model cited none):")
        for passage in answer.passages:
            out.print(f"  - {passage.label}  {passage.uri}")
    label = "expert-approved answer" if answer.curated else answer.model
    if answer.adapter and not answer.curated:
        label += f" + adapter {answer.adapter}"
    out.print(f"\n({label}; {answer.timings.total_s:.1f} s)", style="dim")


@app.command()
def serve(
    host: str | None = typer.Option(None, "--host", help="Interface (default: server.host)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: server.port, 3000)."),
) -> None:
    """Run the chat server: Slack events (HTTP or Socket Mode) at /slack/events, Teams at
    /api/messages, /healthz, /readyz and /metrics (Prometheus), and the schedule (re-sync and
    nightly training)."""

    async def work(settings: Settings) -> None:
        from bot.server import serve as run_server

        err.print("loading the model and the index …", style="dim")
        await run_server(
            settings,
            host=host or settings.server.host,
            port=settings.server.port if port is None else port,
            started=lambda line: err.print(line),
        )
        # Stopped: answers drained or released, jobs recorded, everything closed. A generation
        # batch still running in its thread (it cannot be interrupted) would hold the exit
        # until it ends, past the grace period of a rolling deploy: leave without waiting.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    state.default_log_level = "info"
    _run(work)


@app.command()
def jobs() -> None:
    """Run only the schedule (index re-sync, QLoRA refresh), no chat: e.g. on a GPU trainer node.
    Every process with a schedule competes for each run; it happens once."""

    async def work(settings: Settings) -> None:
        from bot.schedule import Scheduler
        from bot.server import _until_stopped, schedule_mode

        if not settings.schedule.enabled:
            raise ConfigError("nothing to run: EXPERTBOT_SCHEDULE__SYNC and __TRAIN are empty")

        async def run(ops: Any) -> None:
            scheduler = Scheduler(ops, database_url=settings.resolved_database_url)
            await scheduler.start()
            err.print(f"schedule: {schedule_mode(settings)}")
            try:
                await _until_stopped()
            finally:
                await scheduler.stop()

        await _with_ops(settings, run)

    state.default_log_level = "info"
    _run(work)


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """The index and its last sync, the serving adapter, and the feedback counts."""

    async def work(settings: Settings) -> dict[str, Any]:
        return await _with_ops(settings, lambda ops: ops.status())

    result = _run(work)
    if as_json:
        _print_json(result)
        return
    from bot.ops import status_lines

    for line in status_lines(result):
        out.print(escape(line))


async def _with_ops(settings: Settings, job: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    """Run `job(ops)` with the index and the SQL store open and migrated (no model loaded)."""
    from bot.ops import Ops
    from training.feedback.store import FeedbackStore
    from training.registry import AdapterRegistry

    knowledge = _knowledge(settings)
    await knowledge.open()
    try:
        store = FeedbackStore(knowledge.engine)
        return await job(
            Ops(settings, knowledge, store, AdapterRegistry(settings.adapter_registry))
        )
    finally:
        await knowledge.close()


@dataset_app.command("import")
def dataset_import(
    file: Path = typer.Argument(
        ...,
        help='JSONL lines {"question", "answer", "approved_by"}, optionally "access" (public, '
        'restricted, private) and "allowed" (channel / group ids, for restricted).',
    ),
) -> None:
    """Add expert-approved answers (e.g. an FAQ): served as curated answers, indexed as the
    `expert-answers` source at the next sync (public unless a line says otherwise), and trained
    on."""

    async def work(settings: Settings) -> int:
        return await _with_ops(settings, lambda ops: ops.import_examples(file))

    count = _run(work)
    out.print(f"imported {count} expert-approved examples from {escape(str(file))}")


@dataset_app.command("list")
def dataset_list(
    show_all: bool = typer.Option(False, "--all", help="Withdrawn expert answers too."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """The experts' answers (approvals, corrections, imports), newest first, with who may find
    each in the index, or why it is not indexed (served to near-identical questions only)."""
    from training.feedback.expert_answers import index_plan

    async def work(settings: Settings) -> list[dict[str, Any]]:
        answers = await _with_ops(
            settings,
            lambda ops: asyncio.to_thread(ops.store.expert_answers, include_withdrawn=show_all),
        )
        why = {answer.id: reason for answer, reason in index_plan(answers)}
        return [
            {
                "id": a.id,
                "kind": a.kind.value,
                "by": a.approved_by,
                "created_at": a.created_at.isoformat(sep=" ", timespec="seconds"),
                "active": a.active,
                "access": a.access,
                "allowed": list(a.allowed),
                "not_indexed": why.get(a.id) if a.active else "withdrawn",
                "question": a.question,
                "answer": a.answer,
            }
            for a in answers
        ]

    rows = _run(work)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print(
            "no expert answers yet (approve or correct an answer, or `expertbot dataset import`)"
        )
        return
    # Two lines an answer, whatever the terminal's width: the id in full (what `dataset
    # withdraw` takes) with who, when and where it may be found; then its question.
    for row in rows:
        if row["not_indexed"]:
            index = f"not indexed: {row['not_indexed']}"
        elif row["access"] == Access.RESTRICTED:
            index = f"restricted to {', '.join(row['allowed'])}"
        else:
            index = str(row["access"])
        question = row["question"]
        out.print(
            f"{row['id']}  {row['kind']} by {escape(row['by'])}, {row['created_at']} UTC; "
            f"{escape(index)}",
            soft_wrap=True,
        )
        out.print(
            f"  {escape(question if len(question) <= 100 else question[:99] + '…')}",
            soft_wrap=True,
        )


@dataset_app.command("withdraw")
def dataset_withdraw(
    curated_id: str = typer.Argument(
        ..., help="The expert answer's id (`expertbot dataset list`)."
    ),
) -> None:
    """Withdraw an expert answer: served no more at once, out of the index at the next sync,
    and out of the training set."""

    async def work(settings: Settings) -> Any:
        return await _with_ops(settings, lambda ops: ops.withdraw_expert_answer(curated_id))

    answer, withdrawn = _run(work)
    question = answer.question if len(answer.question) <= 60 else answer.question[:59] + "…"
    if not withdrawn:
        out.print(
            f"the {answer.kind.value} answer {answer.id} to {question!r} was already withdrawn"
        )
        return
    out.print(
        f"withdrew the {answer.kind.value} answer {answer.id} to {question!r} (by "
        f"{answer.approved_by}): no longer served; it leaves the index at the next sync"
    )


@answerability_app.command("train")
def answerability_train(
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Refit the answerability model with experts' feedback: abstentions they then answered,
    and answers without sources they rated 👎. Saved into the data dir; served after a restart."""

    async def work(settings: Settings) -> Any:
        return await _with_ops(settings, lambda ops: ops.train_answerability(trigger="cli"))

    result = _run(work)
    if as_json:
        _print_json(result.details)
        return
    out.print(escape(result.summary))


@dataset_app.command("export")
def dataset_export(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Build the training set from the feedback store and write it, versioned by its hash."""

    async def work(settings: Settings) -> tuple[Path, Any]:
        return await _with_ops(settings, lambda ops: ops.export_dataset())

    path, dataset = _run(work)
    summary = dataset.summary() | {"path": str(path)}
    if as_json:
        _print_json(summary)
        return
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary["kinds"].items())) or "none"
    out.print(
        f"{summary['examples']} examples ({summary['train']} train, {summary['heldout']} "
        f"held out; {kinds}) → {escape(str(path))}"
    )
    if summary["gold_absent"]:
        out.print(
            f"  {summary['gold_absent']} show no passage that holds the answer: they teach the "
            "abstention"
        )
    if summary["only_in_expert_answers"]:
        out.print(
            f"  {summary['only_in_expert_answers']} state facts no document holds: served from "
            "the expert answers, not learned"
        )
    for reason, n in sorted(summary["skipped"].items()):
        out.print(f"  left out: {n} {reason}")


@app.command()
def train(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Build the training set and say what a run would do; no training."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """The learning loop: training set → QLoRA fine-tune → eval gate → promotion if it wins."""

    async def work(settings: Settings) -> Any:
        if as_json or dry_run or not err.is_terminal:
            return await _with_ops(settings, lambda ops: ops.train(trigger="cli", dry_run=dry_run))
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("building the training set", total=None)

            def on_event(event: dict[str, Any]) -> None:
                kind = event.get("event")
                if kind == "loading":
                    bar.update(task, description=f"loading {event['base']} on {event['device']}")
                elif kind == "replay":
                    bar.update(task, description="finding what the serving model already answers")
                elif kind == "training":
                    bar.reset(task, total=event["total"], description="training")
                elif kind == "step":
                    bar.update(
                        task,
                        completed=event["step"],
                        description=f"training (loss {event['loss']:.3f})",
                    )
                elif kind == "eval":
                    if event["done"] == 1:
                        bar.reset(
                            task, total=event["total"], description=f"scoring {event['adapter']}"
                        )
                    bar.update(task, completed=event["done"])

            return await _with_ops(
                settings, lambda ops: ops.train(trigger="cli", on_event=on_event)
            )

    result = _run(work)
    if as_json:
        _print_json(result.details | {"ok": result.ok})
    else:
        details = result.details
        if details.get("before") and details.get("after"):
            from training.learning.report import metrics_rows

            table = Table(show_edge=False)
            for column in (
                "metric",
                details["plan"]["serving"] or "base model",
                "candidate",
                "change",
            ):
                table.add_column(column)
            for row in metrics_rows(details["before"], details["after"]):
                table.add_row(*row)
            out.print(table)
        out.print(escape(result.summary))
        if details.get("report"):
            out.print(f"report: {escape(details['report'])}")
    if not result.ok:
        raise typer.Exit(EXIT_ERROR)


@adapters_app.command("list")
def adapters_list(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Every adapter version with its gate verdict and held-out scores (key-fact recall,
    grounding, abstention); * marks the one serving."""
    from training.registry import AdapterRegistry

    async def work(settings: Settings) -> list[dict[str, Any]]:
        registry = AdapterRegistry(settings.adapter_registry)
        active = await asyncio.to_thread(registry.active)
        return [
            {
                "version": v.version,
                "serving": v.version == active,
                "created_at": v.created_at,
                "parent": v.meta.get("parent"),
                "data_hash": v.meta.get("data_hash"),
                "gate": (v.meta.get("gate") or {}).get("passed"),
                "metrics": v.meta.get("metrics", {}),
                "path": str(v.path),
            }
            for v in await asyncio.to_thread(registry.versions)
        ]

    versions = _run(work)
    if as_json:
        _print_json(versions)
        return
    if not versions:
        out.print("no adapter versions yet: the base model serves (run `expertbot train`)")
        return
    table = Table(show_edge=False)
    for column in ("", "version", "created", "parent", "gate", "recall", "grounding", "abstention"):
        table.add_column(column)
    for v in versions:
        gate = {True: "passed", False: "rejected", None: "-"}[v["gate"]]
        metrics = v["metrics"]
        table.add_row(
            "*" if v["serving"] else "",
            v["version"],
            v["created_at"] or "",
            v["parent"] or "base",
            gate,
            _fmt(metrics.get("key_fact_recall")),
            _fmt(metrics.get("grounding")),
            _fmt(metrics.get("abstention")),
        )
    out.print(table)
    if not any(v["serving"] for v in versions):
        out.print("* none: the base model serves")


@adapters_app.command("promote")
def adapters_promote(
    version: str = typer.Argument(..., help="The version to serve, e.g. v0003."),
    force: bool = typer.Option(False, "--force", help="Even if the eval gate rejected it."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Serve VERSION; running bots hot-swap to it within model.adapter_poll_s."""

    async def work(settings: Settings) -> Any:
        return await _with_ops(
            settings, lambda ops: ops.promote(version, force=force, trigger="cli")
        )

    result = _run(work)
    _print_json(result.details) if as_json else out.print(escape(result.summary))


@adapters_app.command("rollback")
def adapters_rollback(
    version: str | None = typer.Argument(
        None, help="Serve this version; default: the one promoted before the serving one."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Return to the previous adapter (or the base model); running bots hot-swap."""

    async def work(settings: Settings) -> Any:
        return await _with_ops(settings, lambda ops: ops.rollback(version, trigger="cli"))

    result = _run(work)
    _print_json(result.details) if as_json else out.print(escape(result.summary))


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


@eval_app.command("answers")
def eval_answers(
    file: Path = typer.Argument(
        ...,
        help='JSON lines: {"question": ..., "answerable": true|false, "answer": reference (optional)}.',
    ),
    as_json: bool = typer.Option(False, "--json", help="Print totals and per-question results."),
    where: WhereKind = typer.Option(WhereKind.PUBLIC, "--where", case_sensitive=False),
) -> None:
    """Answer each question (the model loaded once) and score abstention, citations, agreement."""
    from bot.core.evaluation import evaluate_answers, load_answer_cases

    async def work(settings: Settings) -> tuple[Any, list[Any]]:
        cases = load_answer_cases(file)
        core = _core(settings)
        await core.start()
        try:
            if as_json or not err.is_terminal:
                return await evaluate_answers(core.answerer, cases, where=where)
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            with Progress(
                TextColumn("answering"), BarColumn(), MofNCompleteColumn(), console=err
            ) as bar:
                task = bar.add_task("", total=len(cases))
                return await evaluate_answers(
                    core.answerer,
                    cases,
                    where=where,
                    progress=lambda done, total: bar.update(task, completed=done),
                )
        finally:
            await core.close()

    metrics, outcomes = _run(work)
    if as_json:
        _print_json({**metrics.as_json(), "results": [o.as_json() for o in outcomes]})
        return
    for o in outcomes:
        status = "ok  " if o.correct else "MISS"
        kind = "abstained" if o.abstained else f"answered, {len(o.answer.sources)} sources"
        if o.error:
            kind = f"error: {o.error}"
        f1 = f"  F1 {o.f1:.2f}" if o.f1 is not None else ""
        valid = ""
        if o.citations_valid is False:
            valid = "  (cites nothing)" if not o.answer.sources else "  (invalid citation)"
        out.print(f"{status} {o.case.question[:70]:<70}  {kind}{f1}{valid}")

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0%}"

    out.print(
        f"\n{metrics.questions} questions: answerable answered {pct(metrics.answered_rate)}, "
        f"unanswerable abstained {pct(metrics.abstained_rate)}, citations valid "
        f"{pct(metrics.citation_validity)}, mean F1 "
        f"{'n/a' if metrics.mean_f1 is None else f'{metrics.mean_f1:.2f}'}, "
        f"p50 answer {metrics.latency_p50_s or 0:.1f} s ({metrics.model}"
        f"{' + ' + metrics.adapter if metrics.adapter else ''}), p50 retrieval and abstention "
        f"{metrics.retrieval_p50_ms or 0:.0f} ms, quoted instead of written "
        f"{pct(metrics.quoted_rate)}"
    )
    out.print(f"abstention: {escape(metrics.abstention_rule or '')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
