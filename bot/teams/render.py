"""How an `Answer` looks in Teams: Markdown text with numbered citations (Teams' own citation
entities, shown as pop-ups with the passage), the AI-generated label, Teams' feedback loop
(👍 / 👎 with a comment), and an Adaptive Card with the experts' actions.

The experts' actions are Universal Actions (`Action.Execute`): the bot answers the click with a
new card that replaces the old one for everyone ("Approved by …"), or with a short message.
Everything here is a pure function, tested offline.
"""

from __future__ import annotations

import html
import re
from typing import Any

from microsoft_agents.activity import Attachment
from microsoft_agents.hosting.core.app.streaming import Citation

from bot.chat import curated_note
from bot.core.question import Answer, Source

CARD_TYPE = "application/vnd.microsoft.card.adaptive"
APPROVE_VERB = "expertbot.approve"
CORRECT_VERB = "expertbot.correct"
CORRECTION_INPUT = "correction"
CORRECTION_LIMIT = 3000  # the input's maximum length, as in Slack's correction modal
_ABSTRACT_LIMIT = 480  # Teams shows at most this much of a citation's passage

HELP = (
    "**Ask me** by mentioning me in a channel or group chat, or in a 1:1 chat with me; reply in "
    "the same thread to follow up.\n\n"
    "**Rate** an answer with 👍 / 👎 under it. **Experts** approve an answer or correct it with "
    "the buttons on it; approved and corrected answers are served from then on and teach the "
    "model.\n\n"
    "**Admins** send me `status`, `sync`, `retrain` or `rollback [version]`; `help` shows this."
)
WELCOME = "Hi — I'm expertbot. I answer from the company's documents, with sources.\n\n" + HELP
SEARCHING = "Searching the documents…"  # the informative update while streaming
TEXT_ONLY = "I read text only — ask me a question in words."


def citations(answer: Answer) -> list[Citation]:
    """The cited sources, in the order of their numbers ([1] is the first)."""
    return [_citation(source) for source in sorted(answer.sources, key=lambda s: s.number)]


def _citation(source: Source) -> Citation:
    excerpt = " ".join((source.excerpt or source.label).split())
    if len(excerpt) > _ABSTRACT_LIMIT:
        excerpt = excerpt[: _ABSTRACT_LIMIT - 1].rstrip() + "…"
    url = source.uri if source.uri.startswith(("https://", "http://")) else None
    return Citation(content=excerpt, title=source.label[:200], url=url)


def answer_card(
    answer_id: str,
    answer_text: str,
    *,
    curated: str | None = None,
    status: str | None = None,
    approvable: bool = True,
) -> dict[str, Any]:
    """The card under an answer: the curated mark, a status line after an expert acted, and the
    experts' Approve / Correct actions (Correct opens a text box holding the answer)."""
    body: list[dict[str, Any]] = []
    if curated:
        body.append({"type": "TextBlock", "text": curated, "wrap": True, "color": "Good"})
    if status:
        body.append({"type": "TextBlock", "text": status, "wrap": True, "weight": "Bolder"})
    body.append(
        {
            "type": "TextBlock",
            "text": "For experts: approve this answer, or correct it.",
            "wrap": True,
            "isSubtle": True,
            "size": "Small",
        }
    )
    data = {"answerId": answer_id}
    actions: list[dict[str, Any]] = []
    if approvable:
        actions.append(
            {"type": "Action.Execute", "title": "Approve", "verb": APPROVE_VERB, "data": data}
        )
    actions.append(
        {
            "type": "Action.ShowCard",
            "title": "Correct",
            "card": {
                "type": "AdaptiveCard",
                "body": [
                    {
                        "type": "Input.Text",
                        "id": CORRECTION_INPUT,
                        "label": "The right answer",
                        "isMultiline": True,
                        "isRequired": True,
                        "errorMessage": "Write the right answer.",
                        "maxLength": CORRECTION_LIMIT,
                        "value": answer_text[:CORRECTION_LIMIT],
                    }
                ],
                "actions": [
                    {
                        "type": "Action.Execute",
                        "title": "Save correction",
                        "verb": CORRECT_VERB,
                        "data": data,
                    }
                ],
            },
        }
    )
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
        "actions": actions,
    }


def card_for(answer: Answer) -> dict[str, Any]:
    return answer_card(answer.id, answer.text, curated=curated_note(answer))


def attachment(card: dict[str, Any]) -> Attachment:
    return Attachment(content_type=CARD_TYPE, content=card)


def plain_text(text: str) -> str:
    """A Teams message's text as the person typed it: Teams sends HTML in some clients
    (`<p>…</p>`, `&amp;`); the mention of the bot is already removed by the SDK."""
    text = re.sub(r"<br\s*/?>|</p>|</div>", "\n", text, flags=re.IGNORECASE)
    text = re.sub(r"<[^<>]+>", "", text)
    return html.unescape(text).strip()
