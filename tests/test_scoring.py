"""Answer scores: the key facts of a text, their recall and grounding, the scores of a set of
answers, and the learning loop's gate that decides on them."""

from __future__ import annotations

from typing import Any

import pytest

from training.config import GateConfig
from training.learning.pipeline import judge
from training.learning.report import deciding_scores
from training.scoring import (
    DEFAULT_ABSTAIN_MESSAGE,
    Case,
    case_facts,
    fact_in,
    is_abstention,
    key_fact_recall,
    key_facts,
    says_it_does_not_know,
    score_cases,
    ungrounded_facts,
)

# -- the extractor, one kind of fact at a time --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        # numbers, with the unit that follows or the currency before
        ("You get 25 days of leave.", ["25 days"]),
        ("Up to $1,200 a year, or 1200 EUR abroad.", ["$1200", "1200 eur"]),
        ("A 10% discount, or 15 percent with a code.", ["10%", "15%"]),
        ("The quota is 3.5 GB per person.", ["3.5 gb"]),
        ("The team sits in room 417.", ["417"]),
        ("Within 2 hours, or 10 business days.", ["2 hours", "10 business days"]),
        ("Call extension 4357 now.", ["4357"]),
        ("The hotline answers 24/7.", ["24/7"]),
        # times
        ("Standup is at 9:10, review at 14:30.", ["9:10", "14:30"]),
        ("Doors open at 9:10am and close at 6 p.m. sharp.", ["9:10 am", "6 pm"]),
        # dates
        ("It starts on 2024-03-01.", ["2024-03-01"]),
        ("Due by March 3, or 3 March 2025 at the latest.", ["march 3", "march 3 2025"]),
        ("Renew it by Mar 3, 2025.", ["march 3 2025"]),
        ("We meet on Monday in the big room.", ["monday"]),
        # URLs and e-mail addresses
        (
            "See https://intranet.acme.example/leave. Or mail hr@acme.example.",
            ["https://intranet.acme.example/leave", "hr@acme.example"],
        ),
        ("Connect to vpn-tor.northwind.example, not Node.js.", ["vpn-tor.northwind.example"]),
        # codes and identifiers
        (
            "Order A17 or SKU-1234 with v2.3.1, see inc-42.",
            ["a17", "sku-1234", "v2.3.1", "inc-42"],
        ),
        # all-caps codes keep their case: "IT" is not the word "it"
        ("Use the VPN with SSO before taking PTO.", ["VPN", "SSO", "PTO"]),
        (
            "Incidents go to #inc-billing-obsidian, page @oncall.",
            ["#inc-billing-obsidian", "@oncall"],
        ),
        # names: consecutive capitalised words, not a sentence's first word
        ("The platform team is led by Odalys Brenner.", ["odalys brenner"]),
        ("Our office is in Lisbon, near Porto.", ["lisbon", "porto"]),
        ("Ask Mirela's team.", ["mirela"]),
    ],
)
def test_key_facts_of_each_kind(text: str, facts: list[str]) -> None:
    assert key_facts(text) == facts


@pytest.mark.parametrize(
    "text",
    [
        "Please ask the helpdesk in the it-help channel.",  # ordinary lower-case words
        "Lisbon is lovely in spring.",  # a sentence's first word
        "Sure. Remote work is fine. Note: Travel needs approval.",  # after a full stop, a colon
        "- Remote work is fine\n* Travel needs approval\n1. Fill in the form",  # list items
        "I think I can help, and I'm sure I'll try.",  # "I"
        'He said "The form" (If needed) is OK.',  # function words after quotes, brackets
        "Just ask [1], or read it [2][3].",  # citations
        "## Parental Leave Policy",  # a Markdown heading
        "",
    ],
)
def test_common_words_are_not_facts(text: str) -> None:
    assert key_facts(text) == []


def test_facts_are_normalised_deduplicated_and_in_order_of_appearance() -> None:
    text = (
        "The design team sits in room 417 [1]. Odalys   Brenner leads it; ask Odalys Brenner\n"
        "or Taavi Koskinen in ROOM 417 about the VPN [2]. The VPN is at https://vpn.acme.example."
    )
    assert key_facts(text) == [
        "417",
        "brenner",  # "Odalys" starts the sentence
        "odalys brenner",
        "taavi koskinen",
        "ROOM",  # an all-caps token
        "VPN",
        "https://vpn.acme.example",
    ]


# -- fact_in, recall, grounding ---------------------------------------------------------------


def test_an_all_caps_code_is_found_in_capitals_only() -> None:
    assert key_facts("Ask IT.") == ["IT"]
    assert fact_in("IT", "the IT help desk") and not fact_in("IT", "Click it to reset")


@pytest.mark.parametrize(
    ("fact", "text", "found"),
    [
        ("1,200", "a budget of 1200 a year", True),
        ("$1200", "up to $1,200.", True),
        ("$1200", "up to $1,200.50", False),
        ("9:10", "standup at 09:10", True),
        ("9:10", "standup at 9:10am", True),
        ("9:10", "standup at 19:10", False),
        ("3", "3.5 GB", False),
        ("3.5 gb", "The quota is 3.5 GB.", True),
        ("march 3 2025", "by 3 March 2025", True),
        ("odalys brenner", "ask Odalys\n Brenner [1]", True),
        ("odalys brenner", "ask Odalys or Brenner", False),
        ("brenner", "Odalys Brenner's team", True),
        ("Lisbon", "in lisbon", True),
        ("lisbon", "Lisbonne", False),
        ("42", "see inc-42", False),
        ("#inc-billing", "the inc-billing channel", True),
        ("@oncall", "oncall@acme.example", False),
        ("vpn", "the VPN [1]", True),
        ("", "anything", False),
    ],
)
def test_fact_in_normalises_like_key_facts(fact: str, text: str, found: bool) -> None:
    assert fact_in(fact, text) is found


def test_key_fact_recall_is_the_share_of_the_references_facts_in_the_answer() -> None:
    reference = "The design team sits in room 417 [1]; standup is at 9:10 with Odalys Brenner."
    assert key_fact_recall("Room 417, at 09:10 [2].", reference) == pytest.approx(2 / 3)
    assert key_fact_recall("Odalys Brenner in room 417 at 9:10.", reference) == 1.0
    assert key_fact_recall("The design team sits in room 512.", reference) == 0.0
    assert key_fact_recall("Anything.", "Ask the helpdesk.") is None  # nothing to recall


def test_ungrounded_facts_are_the_answers_facts_in_no_source() -> None:
    sources = ("The billing team sits in room 922 on the ninth floor.", "Who leads billing?")
    answer = "The billing team sits in room 922, ask Taavi Koskinen on Monday at 9:40."
    assert ungrounded_facts(answer, sources) == ["taavi koskinen", "monday", "9:40"]
    assert ungrounded_facts("Room 922 [1].", sources) == []
    assert ungrounded_facts("It is in room 922.", ()) == ["922"]


def test_abstentions_include_the_configured_message() -> None:
    assert says_it_does_not_know("I couldn't find this in the handbook.")
    assert says_it_does_not_know("Sorry, I could not find that.")
    assert says_it_does_not_know("The passages don’t mention it.")
    assert is_abstention(DEFAULT_ABSTAIN_MESSAGE + " Ask in #help-desk.")
    message = "Nothing on this in our docs — try #help-desk."
    assert is_abstention("nothing on  this in our docs — try #help-desk. [1]", message)
    assert not is_abstention("Nothing on this in our docs.", "")
    assert not is_abstention("You get 25 days of leave [1].", message)


# -- scoring a set of answers -----------------------------------------------------------------

# Held-out questions about a made-up company, with the passage that answers each and the
# expert's reference answer.
HELDOUT = [
    (
        "Which room does the design team sit in?",
        "Facilities plan: the design team sits in room 922 on the ninth floor.",
        "The design team sits in room 922 [1].",
    ),
    (
        "Who leads the billing team?",
        "Org chart: the billing team has been led by Taavi Koskinen since 2023.",
        "The billing team is led by Taavi Koskinen [1].",
    ),
    (
        "When is the search team's daily standup?",
        "Rituals: the search team meets for standup at 9:40 every weekday.",
        "The search standup is at 9:40 every weekday [1].",
    ),
    (
        "Which Slack channel does the platform team use for incidents?",
        "On-call guide: platform incidents go to #inc-platform-quokka, paged by @oncall-platform.",
        "Platform incidents go to #inc-platform-quokka [1].",
    ),
]
ABSTAIN = "I couldn't find this in our knowledge base, so I won't guess."


def cases(answers: list[str], probe_answers: list[str]) -> list[Case]:
    """The same held-out questions and probes (each question shown the next one's passage)
    answered by one adapter: `answers` to the questions, `probe_answers` to the probes."""
    out = []
    for (question, passage, reference), answer in zip(HELDOUT, answers, strict=True):
        out.append(_case(question, reference, passage, answer, probe=False))
    for n, answer in enumerate(probe_answers):
        question, _, _ = HELDOUT[n]
        other = HELDOUT[(n + 1) % len(HELDOUT)][1]
        out.append(_case(question, "", other, answer, probe=True))
    return out


def _case(question: str, reference: str, passage: str, answer: str, *, probe: bool) -> Case:
    abstained = is_abstention(answer, ABSTAIN)
    return Case(
        question=question,
        reference=reference,
        passages=(passage,),
        answer=answer,
        cited=(1,) if "[1]" in answer else (),
        invalid_citations=answer.count("[2]"),
        probe=probe,
        abstained=abstained,
    )


# The serving adapter: short answers that get half the facts right, with what it was shown.
BEFORE = cases(
    [
        "Room 922, ninth floor [1].",
        "Ask the billing team, they know [1].",
        "9:40, I think [1].",
        "Ask the platform team [1].",
    ],
    ["Ask your manager.", ABSTAIN, "Check the wiki.", "Ask the helpdesk."],
)
# Learned the experts' phrasing, fills it with values of its own.
SOUNDS_LIKE_AN_EXPERT = cases(
    [
        "The design team sits in room 417 [1].",
        "The billing team is led by Odalys Brenner [1].",
        "The search standup is at 10:05 every weekday [1].",
        "Platform incidents go to #inc-platform-bramblewick [1].",
    ],
    [
        "The design team sits in room 512 [1].",
        "The billing team is led by Mirela Voss [1].",
        "The search standup is at 11:15 every weekday [1].",
        "Platform incidents go to #inc-platform-larkspur [1].",
    ],
)
# Learned to take the facts from its passages, and to say so when they are not there.
READS_ITS_PASSAGES = cases(
    [
        "The design team sits in room 922 [1].",
        "The billing team is led by Taavi Koskinen [1].",
        "The search standup is at 9:40 every weekday [1].",
        "Platform incidents go to #inc-platform-quokka [1].",
    ],
    [ABSTAIN] * 4,
)


def test_score_cases_counts_facts_and_inventions() -> None:
    before = score_cases(BEFORE)
    assert before == {
        "f1": pytest.approx(before["f1"]),
        "key_fact_recall": 0.5,  # room 922 and 9:40
        "grounding": 1.0,  # 922, 9:40: both in the passages
        "invented": 0.0,
        "citation_validity": 1.0,
        "answered": 1.0,
        "abstention": 0.25,
        "questions": 4,
        "probes": 4,
    }
    faker = score_cases(SOUNDS_LIKE_AN_EXPERT)
    assert faker["f1"] is not None and before["f1"] is not None
    assert faker["f1"] > before["f1"] + 0.3  # what F1 rewards
    assert faker["key_fact_recall"] == 0.0 and faker["grounding"] == 0.0
    assert faker["invented"] == 1.0 and faker["abstention"] == 0.0
    good = score_cases(READS_ITS_PASSAGES)
    assert (good["key_fact_recall"], good["grounding"], good["invented"]) == (1.0, 1.0, 0.0)
    assert (good["abstention"], good["answered"], good["f1"]) == (1.0, 1.0, 1.0)


def test_score_cases_measures_nothing_where_there_is_nothing() -> None:
    assert score_cases([]) == {
        "f1": None,
        "key_fact_recall": None,
        "grounding": None,
        "invented": None,
        "citation_validity": None,
        "answered": None,
        "abstention": None,
        "questions": 0,
        "probes": 0,
    }
    # Abstaining everywhere: recall 0, no answered facts to ground, nothing answered.
    scores = score_cases(cases([ABSTAIN] * 4, [ABSTAIN] * 4))
    assert scores["key_fact_recall"] == 0.0 and scores["answered"] == 0.0
    assert scores["grounding"] is None and scores["invented"] is None
    assert scores["citation_validity"] is None and scores["abstention"] == 1.0


def test_citation_validity_wants_a_valid_citation_where_passages_were_shown() -> None:
    shown = Case("q?", "Room 922.", ("room 922",), "Room 922.", (), 0, False, False)
    invalid = Case("q?", "Room 922.", ("room 922",), "Room 922 [2].", (), 1, False, False)
    nothing_shown = Case("q?", "Room 922.", (), "Room 922.", (), 0, False, False)
    assert score_cases([shown, invalid])["citation_validity"] == 0.0
    assert score_cases([nothing_shown])["citation_validity"] == 1.0


def test_case_facts_explain_a_case() -> None:
    [case] = SOUNDS_LIKE_AN_EXPERT[:1]
    assert case_facts(case) == {
        "reference_facts": ["922"],
        "key_fact_recall": 0.0,
        "answer_facts": ["417"],
        "ungrounded": ["417"],
    }
    assert case_facts(READS_ITS_PASSAGES[-1])["key_fact_recall"] is None  # a probe


# -- the gate ------------------------------------------------------------------------------------


def test_the_gate_rejects_an_adapter_that_sounds_like_the_experts_with_invented_values() -> None:
    before, after = score_cases(BEFORE), score_cases(SOUNDS_LIKE_AN_EXPERT)
    decision = judge(before, after, GateConfig())
    reasons = "; ".join(decision.reasons)
    assert not decision.promote
    assert "key-fact recall fell from 0.50 to 0.00" in reasons
    assert "grounding fell from 1.00 to 0.00; answers with invented values 0.00 → 1.00" in reasons
    assert "abstention fell from 0.25 to 0.00" in reasons


def test_the_gate_promotes_an_adapter_that_reads_its_passages_and_abstains() -> None:
    before, after = score_cases(BEFORE), score_cases(READS_ITS_PASSAGES)
    decision = judge(before, after, GateConfig())
    assert decision.promote, decision.reasons
    assert decision.reasons == ("key-fact recall 0.50 → 1.00", "abstention 0.25 → 1.00")
    assert deciding_scores(before, after) == (
        "key-fact recall 0.50 → 1.00, grounding 1.00 → 1.00, abstention 0.25 → 1.00, "
        "valid citations 1.00 → 1.00"
    )


def test_a_recall_drop_rejects_even_when_abstention_improves() -> None:
    careful_but_forgetful = cases(
        [
            "The design team sits in room 922 [1].",
            "Ask the billing team [1].",
            "Ask the search team [1].",
            "Ask the platform team [1].",
        ],
        [ABSTAIN] * 4,
    )
    after = score_cases(careful_but_forgetful)
    assert after["abstention"] == 1.0 and after["key_fact_recall"] == 0.25
    decision = judge(score_cases(BEFORE), after, GateConfig())
    assert not decision.promote
    assert decision.reasons == ("key-fact recall fell from 0.50 to 0.25",)
    # Within the configured tolerance it would pass.
    assert judge(score_cases(BEFORE), after, GateConfig(recall_tolerance=0.25)).promote


BASELINE: dict[str, Any] = {
    "key_fact_recall": 0.60,
    "grounding": 0.80,
    "abstention": 0.50,
    "citation_validity": 0.90,
    "answered": 0.90,
    "f1": 0.40,
}


@pytest.mark.parametrize(
    ("change", "promote", "why"),
    [
        ({"grounding": 0.83}, True, "grounding 0.80 → 0.83"),
        ({"abstention": 0.55}, True, "abstention 0.50 → 0.55"),
        ({"citation_validity": 0.92}, True, "valid citations 0.90 → 0.92"),
        ({"grounding": 0.81, "f1": 0.90}, False, "no gain in grounding (by 0.02)"),
        ({"grounding": 0.90, "key_fact_recall": 0.59}, False, "recall fell from 0.60 to 0.59"),
        ({"abstention": 0.90, "grounding": 0.77}, False, "grounding fell from 0.80 to 0.77"),
        ({"grounding": 0.90, "abstention": 0.45}, False, "abstention fell from 0.50 to 0.45"),
        ({"grounding": 0.90, "citation_validity": 0.84}, False, "valid citations fell"),
        ({"grounding": 0.90, "answered": 0.79}, False, "answered fell from 0.90 to 0.79"),
        ({"grounding": 0.90, "answered": 0.81}, True, "grounding 0.80 → 0.90"),
        ({"grounding": 0.90, "key_fact_recall": None}, True, "key-fact recall not compared"),
        ({"grounding": None, "abstention": None}, False, "no gain"),
        ({"grounding": None, "abstention": 0.60}, True, "abstention 0.50 → 0.60"),
    ],
)
def test_the_gate_needs_a_win_and_no_loss(
    change: dict[str, float | None], promote: bool, why: str
) -> None:
    decision = judge(BASELINE, BASELINE | change, GateConfig())
    assert decision.promote is promote and why in "; ".join(decision.reasons)


def test_every_lost_reason_is_given() -> None:
    after = BASELINE | {"key_fact_recall": 0.1, "grounding": 0.2, "invented": 0.7, "answered": 0.5}
    decision = judge(BASELINE | {"invented": 0.1}, after, GateConfig())
    assert decision.reasons == (
        "key-fact recall fell from 0.60 to 0.10",
        "grounding fell from 0.80 to 0.20; answers with invented values 0.10 → 0.70",
        "answered fell from 0.90 to 0.50",
        "no gain in grounding (by 0.02), abstention on unanswerable questions (by 0.05) or valid "
        "citations (by 0.02); answers with invented values 0.10 → 0.70",
    )


def test_the_status_shows_the_serving_adapters_deciding_scores_before_and_after() -> None:
    from bot.ops import status_lines

    before, after = score_cases(BEFORE), score_cases(READS_ITS_PASSAGES)
    status: dict[str, Any] = {
        "index": {"documents": 3, "chunks": 9, "store": "lancedb"},
        "model": "demo",
        "adapter": {"version": "v0002", "metrics": after | {"loss": 0.7}, "baseline": before},
        "abstention": "retrieval",
        "feedback": dict.fromkeys(
            ("answers", "up", "down", "approved", "corrections", "comments"), 0
        ),
    }
    [model] = [line for line in status_lines(status) if line.startswith("Model:")]
    assert model == (
        "Model: demo + adapter v0002 (held-out scores, before → after: key-fact recall "
        "0.50 → 1.00, grounding 1.00 → 1.00, abstention 0.25 → 1.00, valid citations 1.00 → 1.00, "
        "answered 1.00 → 1.00, answers with invented values 0.00 → 0.00)"
    )
    # An adapter recorded before these scores existed: what it has, without a before.
    status["adapter"] = {"version": "v0001", "metrics": {"f1": 0.8, "abstention": 0.5}}
    assert "+ adapter v0001 (held-out scores: abstention 0.50)" in " ".join(status_lines(status))
