"""Scores of generated answers, shared by `expertbot eval answers`, the learning loop's gate and
the benchmarks: token F1, abstention, and the key facts of a text (the values an answer must get
right: numbers with their units, dates, times, names, codes, channels, URLs), from which the gate
scores fact recall against the expert's answer and grounding in the passages the model was shown.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\w+", re.UNICODE)
_CITATION = re.compile(r"\[\d{1,3}(?:\s*[,;]\s*\d{1,3})*\]")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "and",
        "or",
        "is",
        "are",
        "be",
        "it",
        "this",
        "that",
        "with",
        "by",
        "as",
    ]
)


def answer_tokens(text: str) -> list[str]:
    """Lower-cased word tokens without citations and the most common English function words."""
    text = unicodedata.normalize("NFKC", _CITATION.sub(" ", text)).lower()
    return [t for t in _TOKEN.findall(text) if t not in _STOP]


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 between an answer and a reference answer, in [0, 1]."""
    pred, ref = answer_tokens(prediction), answer_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


# An answer that says the passages don't answer the question (an abstention by the model: the
# answering core's second line of defence, after the retrieval threshold).
_DOES_NOT_KNOW = re.compile(
    r"\b(i (do not|don['’]t|cannot|can['’]t) (know|answer|find|tell)"
    r"|(could not|couldn['’]t) find"
    r"|(the )?(passages?|context|documents?|knowledge base) (do(es)? not|don['’]t|doesn['’]t) "
    r"(contain|mention|say|cover|include|provide|answer)"
    r"|no (relevant )?information (about|on|regarding)"
    r"|(not|isn['’]t|is not) (mentioned|covered|provided|stated) in the (passages?|context))",
    re.IGNORECASE,
)

DEFAULT_ABSTAIN_MESSAGE = "I couldn't find this in our knowledge base, so I won't guess."


def says_it_does_not_know(text: str) -> bool:
    return bool(_DOES_NOT_KNOW.search(text))


def is_abstention(text: str, abstain_message: str = "") -> bool:
    """The text says it does not know, or contains the configured abstention message."""
    if says_it_does_not_know(text):
        return True
    message = _flat(abstain_message)
    return bool(message) and message in _flat(text)


def _flat(text: str) -> str:
    """Case-folded, citations dropped, one space between words, straight apostrophes."""
    text = unicodedata.normalize("NFKC", _CITATION.sub(" ", text)).replace("’", "'")
    return " ".join(text.casefold().split())


# -- key facts ---------------------------------------------------------------------------------
#
# The facts of a text are the values an answer can get right or invent: a number (with its unit
# or currency: "25 days", "$1200", "10%", "3.5 gb", "24/7"; a bare number such as the 417 of
# "room 417"), a time ("9:10", "9:10 am"), a date ("2024-03-01", "march 3 2025"), a URL, an
# e-mail address, a host name ("vpn.acme.com"), a code ("a17", "sku-1234", "v2.3.1"), an
# all-caps token ("vpn"), a Slack channel or handle ("#inc-billing", "@oncall"), and a name:
# consecutive capitalised words ("odalys brenner").
# Names are read with one rule, kept simple on purpose: the first word of a sentence, of a line
# or list item, and the word after a colon are not names (the capital says nothing there), so
# "Lisbon is …" yields no fact and "Odalys Brenner leads …" yields "brenner"; neither are "I"
# and a few capitalised function words ("The", "If" …) that follow quotes or brackets. Weekday
# and month names are names by the same rule ("on Monday" → "monday"); with a day they are a
# date. Facts are normalised as `fact_in` compares them: NFKC, case-folded, citations dropped,
# "1,200" → "1200", "09:10" → "9:10", "9:10am" → "9:10 am", "10 percent" → "10%",
# "Mar 3, 2025" and "3 March 2025" → "march 3 2025".

_MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]  # fmt: skip
_MONTH = (
    r"(?P<{g}>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?"
)
_DAY = r"(?P<{g}>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s(?P<{g}>\d{{4}})(?!\d))?"
_MONTH_DAY = re.compile(
    rf"\b{_MONTH.format(g='m1')}\s{_DAY.format(g='d1')}\b{_YEAR.format(g='y1')}"
    rf"|(?<![\w.,:]){_DAY.format(g='d2')}\s{_MONTH.format(g='m2')}(?![\w-]){_YEAR.format(g='y2')}"
)
_UNITS = (
    r"%|(?:business|working|calendar) days?|ms|s|secs?|seconds?|mins?|minutes?|h|hrs?|hours?"
    r"|days?|nights?|weeks?|months?|years?|yrs?|b|kb|mb|gb|tb|pb|kib|mib|gib|tib|kbps|mbps|gbps"
    r"|bits?|bytes?|eur|usd|gbp|chf|jpy|cad|aud|sek|nok|dkk|pln|inr|cny|euros?|dollars?|pounds?"
    r"|cents?|k|thousand|million|billion|bn|mm|cm|m|km|mi|miles?|g|kg|mg|lbs?|ft|kwh|kw|ghz|mhz"
    r"|people|persons|employees|users|seats|licen[cs]es|times|pages|items"
)
# Tried in this order where two start at the same place; the longest match wins before order.
_FACT_PATTERNS = (
    re.compile(r"(?:https?://|www\.)[^\s<>\"'|]+[^\s<>\"'|.,;:!?)\]]"),
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    # a host name: "vpn-tor.northwind.example", "intranet.acme.com" (not "node.js")
    re.compile(
        r"(?<![\w@./-])[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)*\."
        r"(?:com|org|net|io|dev|app|ai|co|cloud|example|internal|intranet|local|corp|lan|edu|gov)"
        r"(?![\w-]|\.\w)"
    ),
    re.compile(r"(?<![\w&])[#@][a-z0-9][\w.-]*[a-z0-9]|(?<![\w&])[#@][a-z0-9]", re.IGNORECASE),
    re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b"),
    re.compile(r"(?<![\w./])\d+/\d+(?![\w/])"),  # "24/7", "1/2"
    re.compile(rf"\b(?:{'|'.join(m.capitalize() for m in _MONTHS)}) \d{{1,2}}(?: \d{{4}})?\b"),
    re.compile(rf"\b(?:{'|'.join(m.capitalize() for m in _MONTHS)}) \d{{4}}\b"),
    re.compile(r"(?<![\w.:])\d{1,2}(?::\d{2})?(?: [ap]m\b)|(?<![\w.:])\d{1,2}:\d{2}\b"),
    re.compile(r"[$€£¥]\d+(?:\.\d+)*(?: ?(?:k|m|bn|thousand|million|billion)\b)?"),
    re.compile(rf"(?<![\w.,:])\d+(?:\.\d+)*(?: ?(?i:{_UNITS})(?!\w))?(?!\w)"),
    re.compile(
        r"(?<![\w@#./-])(?=[\w.-]*[A-Za-z])(?=[\w.-]*\d)[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9])?"
        r"(?![\w@])"
    ),
    re.compile(r"(?<![\w'’])[A-Z]{2,}(?![\w'’])"),
)
_ALL_CAPS = re.compile(r"[A-Z]{2,}")
_NOT_CODES = frozenset([
    "OK", "AM", "PM", "FYI", "ASAP", "NB", "PS", "TLDR", "NOT", "NO", "DO", "DONT", "NEVER",
    "MUST", "ONLY", "ALL", "AND", "OR", "THE", "IMPORTANT", "NOTE", "WARNING",
])  # fmt: skip
# Capitalised words that are no names even mid-sentence (after a quote or a bracket, in a title).
_NOT_NAMES = frozenset([
    "the", "a", "an", "and", "or", "but", "if", "in", "on", "at", "to", "of", "for", "from",
    "by", "with", "as", "is", "are", "was", "be", "it", "its", "this", "that", "these", "those",
    "there", "here", "we", "you", "your", "our", "they", "their", "he", "she", "his", "her",
    "my", "me", "us", "them", "when", "where", "what", "which", "who", "why", "how", "yes",
    "no", "not", "please", "note", "also", "so", "then", "each", "every", "all", "any", "some",
    "see", "hi", "hello", "hey", "thanks", "thank", "dear", "ok", "okay", "sorry", "however",
    "unfortunately", "dr", "mr", "mrs", "ms", "prof",
])  # fmt: skip
_ABBREVIATIONS = frozenset(
    ["e.g.", "i.e.", "vs.", "dr.", "mr.", "mrs.", "ms.", "prof.", "st.", "approx.", "no."]
)
# A numbered list item's number is no fact: "2. Fill in the form" reads as "- Fill in the form".
_LIST_NUMBER = re.compile(r"^([^\S\n]*)\d{1,2}[.)](?= )", re.MULTILINE)
_MARKER = re.compile(r"[-*•>]+|#{1,6}")
_OPENERS = "\"'“‘([{*_"
_CLOSERS = "\"'”’)]}*_"
_SENTENCE_END = (".", "!", "?", ":")
_THOUSANDS = re.compile(r"(?<![\d,])\d{1,3}(?:,\d{3})+(?![\d,])")


def _prepare(text: str) -> str:
    """NFKC, citations dropped, spaces collapsed (lines kept), numbers/times/dates canonical."""
    text = unicodedata.normalize("NFKC", _CITATION.sub(" ", text))
    text = re.sub(r"[^\S\n]+", " ", text)
    text = _THOUSANDS.sub(lambda m: m[0].replace(",", ""), text)
    text = re.sub(r"([$€£¥]) (?=\d)", r"\1", text)
    text = re.sub(r"(?<=\d) ?(?:%|per ?cent\b)", "%", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<![\d.:])0(\d):(\d\d)", r"\1:\2", text)
    text = re.sub(
        r"(?<![\w.:])(\d{1,2}(?::\d\d)?) ?([ap])(?:\.m(?=\.)|m\b)",
        lambda m: f"{m[1]} {m[2].lower()}m",
        text,
        flags=re.IGNORECASE,
    )
    return _MONTH_DAY.sub(_canonical_date, text)


def _canonical_date(m: re.Match[str]) -> str:
    month, day, year = m["m1"] or m["m2"], m["d1"] or m["d2"], m["y1"] or m["y2"]
    if not 1 <= int(day) <= 31:
        return m[0]
    full = next(name for name in _MONTHS if name.startswith(month[:3].lower())).capitalize()
    return f"{full} {int(day)}" + (f" {year}" if year else "")


def key_facts(text: str) -> list[str]:
    """The facts of `text`, normalised, without repeats, in order of appearance."""
    prepared = _LIST_NUMBER.sub(r"\1-", _prepare(text))
    found: list[tuple[int, int, str]] = []
    taken: list[tuple[int, int]] = []
    candidates = sorted(
        (
            (m.start(), -(m.end() - m.start()), order, m)
            for order, pattern in enumerate(_FACT_PATTERNS)
            for m in pattern.finditer(prepared)
        ),
        key=lambda c: c[:3],
    )
    end = -1
    for start, _, _, m in candidates:
        if start < end or m[0] in _NOT_CODES:
            continue
        found.append((start, m.end(), m[0]))
        taken.append((start, m.end()))
        end = m.end()
    found += _names(prepared, taken)
    facts: list[str] = []
    for _, _, fact in sorted(found, key=lambda f: f[0]):
        fact = " ".join(fact.split() if _cased(fact) else fact.casefold().split())
        if fact not in facts:
            facts.append(fact)
    return facts


def _names(text: str, taken: Sequence[tuple[int, int]]) -> list[tuple[int, int, str]]:
    """Runs of capitalised words that are not a sentence's, line's or list item's first word."""
    names: list[tuple[int, int, str]] = []
    run: list[str] = []
    run_start = run_end = 0

    def flush() -> None:
        if run:
            names.append((run_start, run_end, " ".join(run)))
            run.clear()

    at_start, heading, previous_end = True, False, -1
    for chunk in re.finditer(r"\S+", text):
        raw = chunk[0]
        if previous_end < 0 or "\n" in text[previous_end : chunk.start()]:
            flush()
            at_start, heading = True, raw.strip("#") == ""  # a Markdown heading: no names
        previous_end = chunk.end()
        if _MARKER.fullmatch(raw):
            flush()
            continue
        body = raw.lstrip(_OPENERS)
        word = body.rstrip(_CLOSERS + ".,;:!?")
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        start = chunk.start() + len(raw) - len(body)
        end = start + len(word)
        if body != raw:
            flush()
        if not (at_start or heading) and _is_name(word) and not _overlaps(taken, start, end):
            if not run:
                run_start = start
            run.append(word)
            run_end = end
        else:
            flush()
        if end < chunk.end():
            flush()
        ending = raw.rstrip(_CLOSERS)
        at_start = ending.endswith(_SENTENCE_END) and ending.casefold() not in _ABBREVIATIONS
    flush()
    return names


def _is_name(word: str) -> bool:
    return (
        len(word) > 1
        and word[0].isupper()
        and any(c.islower() for c in word)
        and all(c.isalpha() or c in "-'’" for c in word)
        and word.casefold() not in _NOT_NAMES
        and not word.startswith(("I'", "I’"))
    )


def _overlaps(spans: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def _cased(fact: str) -> bool:
    """An all-caps code ("IT", "VPN") keeps its case, and is found only in capitals: "it" is
    another word."""
    return bool(_ALL_CAPS.fullmatch(fact))


def _haystack(text: str, *, cased: bool = False) -> str:
    prepared = _prepare(text)
    return " ".join((prepared if cased else prepared.casefold()).split())


def _needle(fact: str) -> str:
    if _cased(fact):
        return fact
    needle = _haystack(fact)
    bare = needle.lstrip("#@")
    # "#inc-billing" is found where the answer says "the inc-billing channel"
    return bare if len(bare) > 1 and any(c.isalpha() for c in bare) else needle


def _found(needle: str, haystack: str) -> bool:
    start = haystack.find(needle) if needle else -1
    while start != -1:
        end = start + len(needle)
        if _edge(haystack, start - 1, -1, needle[0]) and _edge(haystack, end, 1, needle[-1]):
            return True
        start = haystack.find(needle, start + 1)
    return False


def _edge(haystack: str, i: int, step: int, inner: str) -> bool:
    """Whether a fact whose outer character is `inner` may end next to haystack[i]: not inside a
    longer word, number ("3.5", "1,200", "9:10"), code ("inc-42") or address ("x@y")."""
    if not 0 <= i < len(haystack) or not inner.isalnum():
        return True
    c = haystack[i]
    beyond = haystack[i + step] if 0 <= i + step < len(haystack) else ""
    if c.isalnum() or c in "_@":
        return False
    if c in "-." and beyond.isalnum():
        return False
    return not (c in ",:" and inner.isdigit() and beyond.isdigit())


def fact_in(fact: str, text: str) -> bool:
    """Whether `fact` appears in `text`, both normalised as `key_facts` normalises: "1,200" is
    "1200", "09:10" is "9:10", "#inc-billing" is "inc-billing"; a multi-word name needs its words
    in a row; a fact never matches inside a longer word or number ("3" is not in "3.5")."""
    return _found(_needle(fact), _haystack(text, cased=_cased(fact)))


def key_fact_recall(answer: str, reference: str) -> float | None:
    """The share of the reference's key facts found in the answer; None if it has none."""
    facts = key_facts(reference)
    if not facts:
        return None
    return sum(fact_in(f, answer) for f in facts) / len(facts)


def ungrounded_facts(answer: str, sources: Sequence[str]) -> list[str]:
    """The answer's key facts found in none of `sources` (the passages it was shown and the
    question): values it invented, or brought from what the model learned."""
    return _not_in(key_facts(answer), sources)


def _not_in(facts: Sequence[str], sources: Sequence[str]) -> list[str]:
    return [f for f in facts if not any(fact_in(f, source) for source in sources)]


# -- scoring a set of answers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """One generated answer to score, with what the model was shown and what it should say."""

    question: str
    reference: str  # the expert's answer ("" for an unanswerable probe)
    passages: tuple[str, ...]  # the passage texts the model was shown
    answer: str  # what it answered (citations already renumbered)
    cited: tuple[int, ...]  # passage numbers it cited (valid ones)
    invalid_citations: int
    probe: bool  # the passages do not hold the answer: the right answer abstains
    abstained: bool


def case_facts(case: Case) -> dict[str, Any]:
    """A case's facts for a report: the reference's, their recall, the answer's ungrounded."""
    answered = not case.abstained
    recall = (
        None if case.probe else key_fact_recall(case.answer if answered else "", case.reference)
    )
    return {
        "reference_facts": [] if case.probe else key_facts(case.reference),
        "key_fact_recall": recall,
        "answer_facts": key_facts(case.answer) if answered else [],
        "ungrounded": (
            ungrounded_facts(case.answer, (*case.passages, case.question)) if answered else []
        ),
    }


def score_cases(cases: Sequence[Case]) -> dict[str, float | int | None]:
    """Scores of a set of answers (None where there is nothing to measure):

    - f1: mean token F1 against the reference, answerable questions (not deciding);
    - key_fact_recall: mean share of the reference's key facts in the answer, over answerable
      questions whose reference has any (an abstention recalls nothing);
    - grounding: of the key facts in all answers that are not abstentions (probes included),
      the share found in the passages shown or the question, pooled over facts;
    - invented: the share of those answers with at least one key fact found in neither;
    - citation_validity: the share of answered answerable questions with no invalid citation
      and, when passages were shown, at least one;
    - answered: the share of answerable questions not abstained on;
    - abstention: the share of unanswerable probes abstained on;
    - questions, probes: how many of each.
    """
    questions = [c for c in cases if not c.probe]
    probes = [c for c in cases if c.probe]
    f1s = [token_f1(c.answer, c.reference) for c in questions]
    recalls: list[float] = []
    for c in questions:
        recall = key_fact_recall("" if c.abstained else c.answer, c.reference)
        if recall is not None:
            recalls.append(recall)
    facts = grounded = 0
    inventing: list[bool] = []
    for c in cases:
        if c.abstained:
            continue
        mine = key_facts(c.answer)
        missing = _not_in(mine, (*c.passages, c.question))
        facts += len(mine)
        grounded += len(mine) - len(missing)
        inventing.append(bool(missing))
    valid = [
        c.invalid_citations == 0 and (bool(c.cited) or not c.passages)
        for c in questions
        if not c.abstained
    ]
    return {
        "f1": _mean(f1s),
        "key_fact_recall": _mean(recalls),
        "grounding": _round(grounded / facts) if facts else None,
        "invented": _mean([float(i) for i in inventing]),
        "citation_validity": _mean([float(v) for v in valid]),
        "answered": _mean([float(not c.abstained) for c in questions]),
        "abstention": _mean([float(c.abstained) for c in probes]),
        "questions": len(questions),
        "probes": len(probes),
    }


def _mean(values: Sequence[float]) -> float | None:
    return _round(sum(values) / len(values)) if values else None


def _round(value: float) -> float:
    return round(value, 4)
