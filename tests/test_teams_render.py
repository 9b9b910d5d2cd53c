"""How answers look in Teams, and what the bot accepts as an activity (pure functions)."""

from __future__ import annotations

from typing import Any

from bot.core.question import Answer, Source, Timings
from bot.teams.app import _feedback_comment, base_conversation, malformed
from bot.teams.render import (
    APPROVE_VERB,
    CORRECT_VERB,
    CORRECTION_LIMIT,
    answer_card,
    card_for,
    citations,
    plain_text,
)


def answer(**kwargs: Any) -> Answer:
    fields: dict[str, Any] = {
        "id": "a1",
        "question": "q",
        "text": "Reset it on the portal [1]; VPN needs it too [2].",
        "sources": (
            Source(2, "VPN", "file:///srv/docs/vpn.md", "", excerpt="Connect " * 200),
            Source(1, "IT Handbook", "https://wiki.example.com/it", "Passwords", excerpt="Go to"),
        ),
        "abstained": False,
        "curated": False,
        "model": "m",
        "adapter": None,
        "timings": Timings(),
    }
    return Answer(**(fields | kwargs))


def test_citations_follow_the_numbers_with_the_passage_and_only_web_links() -> None:
    first, second = citations(answer())
    assert (first.title, first.url, first.content) == (
        "IT Handbook › Passwords",
        "https://wiki.example.com/it",
        "Go to",
    )
    assert second.title == "VPN" and second.url is None  # a file path is no link for a reader
    assert len(second.content) == 480 and second.content.endswith("…")


def test_the_card_offers_experts_approve_and_a_prefilled_correction() -> None:
    card = card_for(answer())
    approve, correct = card["actions"]
    assert (approve["verb"], approve["data"]) == (APPROVE_VERB, {"answerId": "a1"})
    [box] = correct["card"]["body"]
    assert box["value"] == answer().text and box["maxLength"] == CORRECTION_LIMIT
    assert correct["card"]["actions"][0]["verb"] == CORRECT_VERB
    assert "Expert-approved" not in str(card)
    curated = card_for(answer(curated=True, approved_by="Dana"))
    assert "✅ Expert-approved answer (approved by Dana)" in str(curated)
    done = answer_card("a1", "x" * 5000, status="✅ Approved by Dana", approvable=False)
    assert [a["title"] for a in done["actions"]] == ["Correct"]
    assert len(done["actions"][0]["card"]["body"][0]["value"]) == CORRECTION_LIMIT


def test_teams_html_becomes_the_text_the_person_typed() -> None:
    assert plain_text("<p>How do I reset &amp; unlock?</p>") == "How do I reset & unlock?"
    assert plain_text("line one<br>line two") == "line one\nline two"
    assert plain_text("   ") == ""


def test_what_is_not_an_activity_is_named() -> None:
    base = {
        "type": "message",
        "conversation": {"id": "c"},
        "serviceUrl": "https://s",
        "channelId": "msteams",
        "from": {"id": "29:u"},
        "recipient": {"id": "28:bot"},
    }
    assert malformed(base) is None
    assert malformed([base]) == "an activity must be a JSON object"
    assert malformed(base | {"type": ""}) == "the activity has no type"
    assert malformed({**base, "conversation": "c"}) == "the activity has no conversation id"
    assert malformed({**base, "serviceUrl": None}) == "the activity has no serviceUrl to reply to"
    problem = malformed(base | {"from": 5})
    assert problem is not None and problem.startswith("not a valid activity: from")
    # What the SDK cannot run a turn for.
    assert (
        malformed(base | {"serviceUrl": "s"}) == "the activity's serviceUrl is not an http(s) URL"
    )
    assert malformed({k: v for k, v in base.items() if k != "channelId"}) == (
        "the activity has no channelId"
    )
    assert malformed(base | {"from": {"name": "Erin"}}) == "the activity has no from id"
    assert malformed(base | {"recipient": None}) == "the activity has no recipient id"


def test_conversation_ids_and_feedback_comments() -> None:
    assert base_conversation("19:abc@thread.tacv2;messageid=17") == "19:abc@thread.tacv2"
    assert base_conversation("a:1xyz") == "a:1xyz"
    assert _feedback_comment({"feedback": '{"feedbackText": " too long "}'}) == "too long"
    assert _feedback_comment({"feedback": "not json"}) == "not json"
    assert _feedback_comment({"feedback": '{"feedbackText": ""}'}) is None
    assert _feedback_comment({"feedback": "x" * 5000}) == "x" * 2000
    assert _feedback_comment(None) is None
