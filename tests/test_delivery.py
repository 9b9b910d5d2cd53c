"""`deliver()`, the answer flow every platform shares: the real answering core (handbook index,
SQL store) with a scripted OpenAI-compatible model server, into a sink that records what a
platform would have been asked to show."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from bot.chat import APOLOGY, BUSY
from bot.core.question import Answer, Question, Where, WhereKind
from bot.core.runtime import Core
from bot.delivery import deliver
from tests.fakes import FakeOpenAI
from tests.test_answering import PASSWORD_Q, settings_for

CITED = "Use the self-service portal to reset it [1]. Then sign in on every device again [2]."
WHERE = Where(kind=WhereKind.PUBLIC, channel="C0TEST", platform="slack", thread="1700000000.000100")


@dataclass
class Call:
    method: str
    text: str | None
    unsent: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass
class Recording:
    """A sink that shows nothing: it records each call, and breaks where a test says so."""

    interval_s: float = 0.0
    message_ids: Sequence[str] = ("1700000000.000200",)
    breaks_in: str | None = None  # "finished" or "failed": that call raises
    calls: list[Call] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    async def delta(self, text: str) -> None:
        self.calls.append(Call("delta", text))

    async def finished(self, answer: Answer, unsent: str) -> Sequence[str]:
        self.calls.append(Call("finished", answer.text, unsent))
        self.answers.append(answer)
        if self.breaks_in == "finished":
            raise RuntimeError("the platform refused the final message")
        return self.message_ids

    async def failed(self, text: str | None, unsent: str) -> None:
        self.calls.append(Call("failed", text, unsent))
        if self.breaks_in == "failed":
            raise RuntimeError("the platform refused that too")

    def methods(self) -> list[str]:
        return [c.method for c in self.calls]

    def deltas(self) -> list[str]:
        return [c.text or "" for c in self.calls if c.method == "delta"]


@pytest.fixture
async def scripted(handbook_data_dir: Path, embedder: Any, aiohttp_server: Any):
    server = FakeOpenAI()
    server.served = ["served"]
    server.reply = CITED
    running = await aiohttp_server(server.app())
    settings = settings_for(handbook_data_dir, "served")
    settings.model.backend = "openai"
    settings.model.openai.base_url = str(running.make_url("/v1"))
    core = Core.build(settings, embedder=embedder)
    await core.start()
    yield core, server
    if server.gate is not None:
        server.gate.set()  # no handler left waiting at shutdown
    await core.close()


def question(text: str = PASSWORD_Q) -> Question:
    return Question(text, asker="U0ASKER", where=WHERE)


def recorded(core: Core) -> int:
    return core.store.feedback_counts()["answers"]


def links(core: Core) -> list[tuple[str, str, str, str | None]]:
    with core.knowledge.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT platform, conversation, message_id, thread FROM answer_messages")
        ).all()
    return [tuple(row) for row in rows]


async def test_the_answer_streams_in_order_then_is_shown_whole_and_linked_to_its_messages(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    server.chunk_chars = 7
    sink = Recording(message_ids=("1700000000.000200", "1700000000.000300"))
    answer = await deliver(core.answerer, question(), sink)
    assert answer is not None and answer.text == CITED
    assert sink.methods() == ["delta"] * len(sink.deltas()) + ["finished"]
    assert len(sink.deltas()) > 1 and all(sink.deltas())
    assert "".join(sink.deltas()) == CITED  # as written, in order, nothing held back
    assert sink.answers == [answer] and sink.calls[-1].unsent == ""
    for message_id in sink.message_ids:
        assert core.store.answer_for_message("slack", "C0TEST", message_id) == answer.id
    assert sorted(links(core)) == [("slack", "C0TEST", m, WHERE.thread) for m in sink.message_ids]
    assert recorded(core) == 1  # recorded by the core, once


async def test_a_question_still_being_looked_up_is_answered_once_it_is_known(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, _ = scripted

    async def looked_up() -> Question:
        await asyncio.sleep(0.01)  # the thread's history, the asker's groups
        return question()

    sink = Recording()
    answer = await deliver(core.answerer, looked_up(), sink)
    assert answer is not None and sink.methods()[-1] == "finished"
    assert WHERE.thread is not None
    assert core.store.thread_answers("slack", "C0TEST", WHERE.thread)[0].id == answer.id


async def test_progress_comes_at_most_every_interval_and_the_rest_with_the_final_answer(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    server.word_delay_s = 0.05  # about a second of writing
    sink = Recording(interval_s=0.25)
    answer = await deliver(core.answerer, question(), sink)
    assert answer is not None
    deltas = [c for c in sink.calls if c.method == "delta"]
    assert 1 < len(deltas) < len(server.pieces())
    assert all(b.at - a.at >= 0.25 - 0.01 for a, b in itertools.pairwise(deltas))
    assert "".join(sink.deltas()) + sink.calls[-1].unsent == answer.text == CITED

    quiet = Recording(interval_s=3600)
    server.word_delay_s = 0
    again = await deliver(core.answerer, question(), quiet)
    assert again is not None and quiet.methods() == ["delta", "finished"]
    [first] = quiet.deltas()
    assert first and first + quiet.calls[-1].unsent == again.text  # the first at once


async def test_a_busy_model_gets_the_busy_reply_and_nothing_is_recorded_or_linked(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    server.chat_status = 503
    sink = Recording()
    with capture_logs() as logs:
        assert await deliver(core.answerer, question(), sink) is None
    assert [(c.method, c.text, c.unsent) for c in sink.calls] == [("failed", BUSY, "")]
    assert recorded(core) == 0 and links(core) == []
    assert [e["log_level"] for e in logs if e["event"] == "answer.overloaded"] == ["warning"]


@pytest.mark.parametrize(
    ("text", "told"),
    [
        ("why " * 2000, "I can't answer that: the question is too long ("),
        (" \u200b ", "I can't answer that: the question is empty."),
    ],
)
async def test_a_question_the_asker_can_fix_is_told_what_is_wrong(
    scripted: tuple[Core, FakeOpenAI], text: str, told: str
) -> None:
    core, server = scripted
    sink = Recording()
    assert await deliver(core.answerer, question(text), sink) is None
    [call] = sink.calls
    assert call.method == "failed" and (call.text or "").startswith(told)
    assert recorded(core) == 0 and server.chats() == []


async def test_an_unexpected_failure_is_apologised_for_logged_and_never_shown(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    server.chat_status = 500  # its body says "scripted failure …"
    sink = Recording()
    with capture_logs() as logs:
        assert await deliver(core.answerer, question(), sink) is None
    assert [(c.method, c.text) for c in sink.calls] == [("failed", APOLOGY)]
    [failed] = [e for e in logs if e["event"] == "answer.failed"]
    assert failed["log_level"] == "error" and isinstance(failed["exc_info"], Exception)
    assert "scripted failure" in failed["error"]
    assert "scripted failure" not in repr(sink.calls)


async def test_an_answer_breaking_off_midway_keeps_what_was_shown_then_apologises(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    # A broken chunk after the first sentence: shown, as it is clearly an answer's beginning.
    server.break_after = len(CITED.split(". ")[0].split())
    server.malformed = True
    sink = Recording()
    assert await deliver(core.answerer, question(), sink) is None
    *shown, last = sink.methods()
    assert shown and set(shown) == {"delta"} and last == "failed"
    assert CITED.startswith("".join(sink.deltas())) and sink.calls[-1].text == APOLOGY
    assert recorded(core) == 0 and links(core) == []


async def test_a_failure_while_the_question_is_looked_up_is_apologised_for(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted

    async def looked_up() -> Question:
        raise ConnectionError("the directory is unreachable")

    sink = Recording()
    assert await deliver(core.answerer, looked_up(), sink) is None
    assert [(c.method, c.text) for c in sink.calls] == [("failed", APOLOGY)]
    assert server.chats() == []  # nothing was asked of the model


async def test_a_final_message_the_platform_refuses_is_apologised_for_and_not_linked(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, _ = scripted
    sink = Recording(breaks_in="finished")
    assert await deliver(core.answerer, question(), sink) is None
    assert sink.methods()[-2:] == ["finished", "failed"] and sink.calls[-1].text == APOLOGY
    assert links(core) == [] and recorded(core) == 1


async def test_a_reason_the_platform_refuses_too_is_logged_and_deliver_returns(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    server.chat_status = 503
    sink = Recording(breaks_in="failed")
    with capture_logs() as logs:
        assert await deliver(core.answerer, question(), sink) is None
    assert sink.methods() == ["failed"]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["answer.reply_failed"]


async def test_a_cancelled_answer_ends_what_was_shown_tells_nobody_and_stops_the_model(
    scripted: tuple[Core, FakeOpenAI],
) -> None:
    core, server = scripted
    server.gate = asyncio.Event()  # the model stalls after its first sentence (shown)
    server.break_after = len(CITED.split(". ")[0].split())
    sink = Recording()
    task = asyncio.create_task(deliver(core.answerer, question(), sink))
    first = CITED.split(". ")[0] + "."
    for _ in range(500):
        if "".join(sink.deltas()).strip() == first:
            break
        await asyncio.sleep(0.01)
    assert "".join(sink.deltas()).strip() == first and set(sink.methods()) == {"delta"}
    shown = len(sink.calls)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(c.method, c.text) for c in sink.calls[shown:]] == [("failed", None)]
    await asyncio.wait_for(server.disconnected.wait(), 5)  # the model's stream was closed
    assert recorded(core) == 0 and links(core) == []
