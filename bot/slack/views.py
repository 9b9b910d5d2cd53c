"""The modals the app opens: the "Correct this answer" form, prefilled with the answer, and the
notice shown where the shortcut was used on a message that is not one of the bot's answers."""

from __future__ import annotations

from typing import Any

from bot.slack import ids

_TITLE = "Correct this answer"
_INPUT_LIMIT = 3000  # Slack's limit on a plain-text input


def correction_view(question: str, answer: str, metadata: str) -> dict[str, Any]:
    """The form: the question, and the answer to edit; `metadata` comes back on submission."""
    return {
        "type": "modal",
        "callback_id": ids.CORRECTION_VIEW,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": _TITLE},
        "submit": {"type": "plain_text", "text": "Save correction"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Question:* {question[:2900]}"},
            },
            {
                "type": "input",
                "block_id": ids.CORRECTION_BLOCK,
                "label": {"type": "plain_text", "text": "The right answer"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": ids.CORRECTION_INPUT,
                    "multiline": True,
                    "initial_value": answer[:_INPUT_LIMIT],
                    "max_length": _INPUT_LIMIT,
                },
            },
        ],
    }


def notice_view(text: str) -> dict[str, Any]:
    """A modal that only says `text`."""
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": _TITLE},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "plain_text", "text": text}}],
    }
