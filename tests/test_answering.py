"""The answering core end to end: the real handbook index (LanceDB), the real SQL store, and a
real generator — the tiny Phi-3 in process, or an OpenAI-compatible backend talking to a local
fake server when a test needs to script what the model writes (citations)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from base.errors import GenerationTimeout, QueryError
from bot.core.answering import QUOTE_INTRO
from bot.core.question import Answer, Passage, Question, Turn, Where, WhereKind
from bot.core.runtime import Core
from tests.fakes import FakeOpenAI
from tests.helpers import PASSWORD_Q, settings_for, stored_answer
from training.feedback.records import StoredSource
from training.serving.degeneration import QUOTE_MODEL

SWALLOW_Q = "What is the airspeed velocity of an unladen swallow carrying a coconut?"


class CountingGenerator:
    """Wraps a real generator and counts how often the core asks it to write."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def stream(self, request: Any) -> Any:
        self.calls += 1
        return self.inner.stream(request)


@pytest.fixture
async def core(handbook_data_dir: Path, tiny_phi3: Path, embedder):
    settings = settings_for(
        handbook_data_dir,
        str(tiny_phi3),
        answer__where_to_ask="Ask in #help-desk.",
        answer__private_readers=["U_HR_LEAD", "hr-team"],
    )
    built = Core.build(settings, embedder=embedder)
    built.generator = CountingGenerator(built.generator)
    built.answerer.generator = built.generator
    await built.start()
    yield built
    await built.close()


async def collect(core: Core, question: Question) -> tuple[list[str], Answer]:
    deltas: list[str] = []
    final = None
    async for item in core.answerer.stream(question):
        if isinstance(item, Answer):
            final = item
        else:
            deltas.append(item)
    assert final is not None
    return deltas, final


def docs(answer: Answer) -> set[str]:
    return {p.doc_id for p in answer.passages}


async def test_an_answer_streams_then_arrives_whole_and_is_recorded(core: Core) -> None:
    deltas, answer = await collect(core, Question(PASSWORD_Q, asker="U1"))
    assert not answer.abstained and not answer.curated
    assert "".join(deltas).strip() == answer.text
    assert "it/help-desk.md" in docs(answer)
    assert answer.model == str(core.settings.model.base) and answer.adapter is None
    t = answer.timings
    assert 0 < t.retrieval_s < t.total_s and t.generation_s > 0
    assert t.first_token_s is not None and t.first_token_s <= t.total_s
    row = core.store.get_answer(answer.id)
    assert row is not None
    assert row.question == PASSWORD_Q and row.asker == "U1" and row.answer == answer.text
    assert row.where_kind == "public" and row.abstained is False
    assert any(r.doc == "it/help-desk.md" for r in row.retrieved)


async def test_nothing_relevant_means_an_honest_abstention_without_the_model(core: Core) -> None:
    deltas, answer = await collect(core, Question(SWALLOW_Q))
    assert answer.abstained and answer.sources == () and answer.passages == ()
    assert answer.text == (
        "I couldn't find this in our knowledge base, so I won't guess. Ask in #help-desk."
    )
    assert deltas == [answer.text]
    assert isinstance(core.generator, CountingGenerator) and core.generator.calls == 0
    assert stored_answer(core.store, answer.id).abstained is True


COMPENSATION_Q = "What are the salary compensation bands for senior engineers?"


async def test_private_documents_only_reach_dms_of_permitted_people(core: Core) -> None:
    private = "people/compensation-bands.md"
    public = await core.answerer.answer(Question(COMPENSATION_Q, asker="U_HR_LEAD"))
    assert private not in docs(public)
    private_channel = await core.answerer.answer(
        Question(COMPENSATION_Q, asker="U_HR_LEAD", where=Where(WhereKind.PRIVATE, "C0HR"))
    )
    assert private not in docs(private_channel)
    stranger_dm = await core.answerer.answer(
        Question(COMPENSATION_Q, asker="U_STRANGER", where=Where(WhereKind.DM))
    )
    assert private not in docs(stranger_dm)
    reader_dm = await core.answerer.answer(
        Question(COMPENSATION_Q, asker="U_HR_LEAD", where=Where(WhereKind.DM))
    )
    assert private in docs(reader_dm) and not reader_dm.abstained
    group_dm = await core.answerer.answer(
        Question(
            COMPENSATION_Q,
            asker="U_NEW",
            asker_groups=frozenset({"hr-team"}),
            where=Where(WhereKind.DM),
        )
    )
    assert private in docs(group_dm)


async def test_restricted_documents_only_where_they_are_allowed(core: Core) -> None:
    restricted = "finance/quarter-close.md"
    question = "What are the steps of the quarter-end close procedure?"
    public = await core.answerer.answer(Question(question))
    other = await core.answerer.answer(Question(question, where=Where(WhereKind.PRIVATE, "C0X")))
    finance = await core.answerer.answer(
        Question(question, where=Where(WhereKind.PRIVATE, "C0FINANCE"))
    )
    assert restricted not in docs(public) | docs(other)
    assert restricted in docs(finance)


async def test_a_curated_answer_is_served_as_is_without_generation(core: Core, embedder) -> None:
    vector = embedder.embed_query("How can I reset my password?")
    core.store.add_curated(
        question="How can I reset my password?",
        embedding=vector,
        answer="Use KeyDesk at https://keydesk.northwind.example [1].",
        sources=[StoredSource("Accounts and Passwords", "file:///accounts.md", "Reset")],
        approved_by="U_EXPERT",
    )
    deltas, answer = await collect(core, Question("how can i reset my password"))
    assert answer.curated and not answer.abstained
    assert answer.text == "Use KeyDesk at https://keydesk.northwind.example [1]."
    assert [s.title for s in answer.sources] == ["Accounts and Passwords"]
    assert answer.approved_by == "U_EXPERT"
    assert deltas == [answer.text]
    assert isinstance(core.generator, CountingGenerator) and core.generator.calls == 0
    # A different question is not "near-identical": it is generated as usual.
    other = await core.answerer.answer(Question("How do I unlock my account after a trip?"))
    assert not other.curated


async def test_a_curated_answer_citing_a_private_document_stays_out_of_public(
    core: Core, embedder
) -> None:
    core.store.add_curated(
        question=COMPENSATION_Q,
        embedding=embedder.embed_query(COMPENSATION_Q),
        answer="Senior engineers: band E4 [1].",
        sources=[StoredSource("Compensation Bands", "file:///comp.md", "", access="private")],
        approved_by="U_HR_LEAD",
    )
    public = await core.answerer.answer(Question(COMPENSATION_Q))
    assert not public.curated and "E4" not in public.text
    dm = await core.answerer.answer(
        Question(COMPENSATION_Q, asker="U_HR_LEAD", where=Where(WhereKind.DM))
    )
    assert dm.curated and dm.text == "Senior engineers: band E4 [1]."


async def test_a_follow_up_is_searched_with_the_thread_it_belongs_to(core: Core) -> None:
    history = (
        Turn("user", "How many vacation days do I get in Portugal?"),
        Turn("assistant", "25 working days [1]."),
    )
    answer = await core.answerer.answer(Question("And in Canada?", history=history))
    assert "people/leave-and-holidays.html" in docs(answer)


@pytest.mark.parametrize("text", ["", "   \n\t  ", "\x00\x07\x1b"])
async def test_an_empty_question_is_a_clear_error(core: Core, text: str) -> None:
    with pytest.raises(QueryError, match="the question is empty"):
        await core.answerer.answer(Question(text))


def recorded_answers(core: Core) -> int:
    from training.feedback.store import answers

    with core.store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(answers)).scalar_one())


async def test_a_huge_question_is_refused_clearly_and_nothing_is_recorded(core: Core) -> None:
    before = recorded_answers(core)
    with pytest.raises(QueryError, match=r"too long \(40,000 characters; the limit is 4,000\)"):
        await core.answerer.answer(Question("x" * 40_000))
    assert recorded_answers(core) == before


async def test_control_characters_are_dropped_and_other_languages_answered(core: Core) -> None:
    cleaned = await core.answerer.answer(Question("How do I\x00 reset my\x1b password?\u202e"))
    row = stored_answer(core.store, cleaned.id)
    assert row.question == "How do I reset my password?"
    assert "it/help-desk.md" in docs(cleaned)
    german = await core.answerer.answer(Question("Wie setze ich mein Passwort zurück?"))
    japanese = await core.answerer.answer(
        Question("パスワードをリセットするにはどうすればいいですか？")
    )
    for answer in (german, japanese):
        assert answer.text and (answer.abstained or answer.passages)


async def test_a_slow_answer_times_out_cleanly(handbook_data_dir: Path, tiny_phi3: Path, embedder):
    settings = settings_for(handbook_data_dir, str(tiny_phi3))
    settings.model.timeout_s = 0.5
    settings.model.max_new_tokens = 5000
    core = Core.build(settings, embedder=embedder)
    await core.start()
    try:
        began = time.monotonic()
        with pytest.raises(GenerationTimeout, match=r"took longer than .* and was cancelled"):
            await core.answerer.answer(Question(PASSWORD_Q))
        assert time.monotonic() - began < 10, "the slow answer was not cancelled in time"
        assert recorded_answers(core) == 0  # half an answer is not kept
        # The cancelled generation freed the model: the next question is answered.
        core.settings.model.timeout_s = 60
        core.settings.model.max_new_tokens = 4
        answer = await core.answerer.answer(Question(PASSWORD_Q))
        assert answer.text and not answer.abstained
    finally:
        await core.close()


# -- scripted model output through the OpenAI-compatible backend --------------------------------


@pytest.fixture
async def scripted(handbook_data_dir: Path, embedder, aiohttp_server):
    server = FakeOpenAI()
    server.served = ["served"]
    server.chunk_chars = 3  # split citation markers mid-way on purpose
    running = await aiohttp_server(server.app())
    settings = settings_for(handbook_data_dir, "served")
    settings.model.backend = "openai"
    settings.model.openai.base_url = str(running.make_url("/v1"))
    core = Core.build(settings, embedder=embedder)
    await core.start()
    yield core, server
    await core.close()


async def test_citations_are_renumbered_and_unmatched_ones_never_shown(scripted) -> None:
    core, server = scripted
    server.reply = "Go to KeyDesk [2] and enter the code [7]. Passwords rotate yearly [1]."
    deltas, answer = await collect(core, Question(PASSWORD_Q))
    assert answer.text == "Go to KeyDesk [1] and enter the code. Passwords rotate yearly [2]."
    assert "".join(deltas) == answer.text  # what streamed is what is kept
    shown = answer.passages
    assert [(s.number, s.title, s.heading) for s in answer.sources] == [
        (1, shown[1].title, shown[1].heading),
        (2, shown[0].title, shown[0].heading),
    ]
    assert answer.invalid_citations == 1
    # The model was given the numbered passages and the question, in its messages.
    sent = server.chats()[-1].body["messages"][-1]["content"]
    assert f"[1] {shown[0].label}" in sent and PASSWORD_Q in sent
    # ... and told to stop where a small model would start echoing the prompt's layout.
    assert "\nQuestion: " in server.chats()[-1].body["stop"]


async def test_an_answer_without_citations_lists_no_sources(scripted) -> None:
    core, server = scripted
    server.reply = "Use the self-service portal."
    answer = await core.answerer.answer(Question(PASSWORD_Q))
    assert answer.text == "Use the self-service portal." and answer.sources == ()


def assert_quotes(answer: Answer, passage: Passage) -> None:
    """`answer` is `passage` quoted, marked as a quote, cited [1] and listed as its source."""
    assert answer.text.startswith(f"{QUOTE_INTRO} [1]:\n\n> ")
    first_line = passage.text.strip().splitlines()[0]
    assert f"> {first_line[:60]}" in answer.text
    assert [(s.number, s.title, s.uri, s.heading) for s in answer.sources] == [
        (1, passage.title, passage.uri, passage.heading)
    ]
    assert not answer.abstained and not answer.curated
    assert answer.model == QUOTE_MODEL and answer.adapter is None


@pytest.mark.parametrize("reply", [" [9] ", "", "1.", "- ", "**", "1. 2. 3."])
async def test_a_broken_model_reply_becomes_the_best_passage_quoted(scripted, reply) -> None:
    core, server = scripted
    server.reply = reply
    with capture_logs() as logs:
        deltas, answer = await collect(core, Question(PASSWORD_Q))
    assert_quotes(answer, answer.passages[0])
    assert "".join(deltas) == answer.text  # nothing of the broken reply was shown
    row = stored_answer(core.store, answer.id)
    assert row.answer == answer.text and row.model == QUOTE_MODEL and not row.abstained
    assert [(s.number, s.source.uri) for s in row.sources] == [(1, answer.passages[0].uri)]
    [event] = [e for e in logs if e["event"] == "answer.quoted"]
    assert event["model"] == "served" and event["shown"] is False
    assert event["reason"] in ("empty", "too_short")


async def test_a_loop_stops_the_model_and_is_replaced_by_a_quote(scripted) -> None:
    core, server = scripted
    server.reply = "Passwords are reset at KeyDesk. "
    server.endless = True
    with capture_logs() as logs:
        deltas, answer = await collect(core, Question(PASSWORD_Q))
    assert server.disconnected.is_set()  # the model was stopped, not left writing
    assert_quotes(answer, answer.passages[0])
    # What was shown before the loop showed is replaced by the final Answer (the sinks show it).
    assert "".join(deltas).count("Passwords are reset at KeyDesk.") < 3
    assert stored_answer(core.store, answer.id).answer == answer.text
    [event] = [e for e in logs if e["event"] == "answer.quoted"]
    assert event["reason"] == "loop" and event["shown"] is True


async def test_a_passage_copied_as_the_answer_is_shown_as_written(scripted) -> None:
    # Small models often answer a look-up by copying the passage: grounded, so not broken.
    core, server = scripted
    passages = (await core.answerer.answer(Question(PASSWORD_Q))).passages
    copied = next(p for p in passages[1:] if len(p.text.split()) >= 12)
    for reply in (copied.text, f"{copied.text} [{passages.index(copied) + 1}]"):
        server.reply = reply
        answer = await core.answerer.answer(Question(PASSWORD_Q))
        assert answer.model == "served" and answer.text.startswith(copied.text.strip()[:40])


async def test_the_prompt_echoed_back_is_never_shown(scripted) -> None:
    core, server = scripted
    server.reply = core.settings.prompt.system_prompt
    deltas, answer = await collect(core, Question(PASSWORD_Q))
    assert_quotes(answer, answer.passages[0])
    assert "".join(deltas) == answer.text


async def test_a_short_real_answer_is_kept(scripted) -> None:
    core, server = scripted
    server.reply = "9 minutes [1]."
    deltas, answer = await collect(core, Question(PASSWORD_Q))
    assert answer.text == "9 minutes [1]." and "".join(deltas) == answer.text
    assert answer.model == "served" and len(answer.sources) == 1


async def test_a_model_that_says_the_passages_dont_answer_is_an_abstention(scripted) -> None:
    core, server = scripted
    server.reply = "The passages do not mention the lunch menu, so I don't know."
    answer = await core.answerer.answer(Question(PASSWORD_Q))
    assert answer.abstained and answer.sources == ()
    assert answer.text == server.reply  # what was streamed stays what is shown
    assert stored_answer(core.store, answer.id).abstained is True
    server.reply = "I don't know the details, but KeyDesk resets passwords [1]."
    cited = await core.answerer.answer(Question(PASSWORD_Q))
    assert not cited.abstained and len(cited.sources) == 1  # it cited a passage: an answer
