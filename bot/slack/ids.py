"""The identifiers the app, its blocks and the app manifest share."""

from __future__ import annotations

# Feedback buttons on every answer (value: the answer id).
FEEDBACK_BLOCK = "expertbot_feedback"
FEEDBACK_UP = "expertbot_feedback_up"
FEEDBACK_DOWN = "expertbot_feedback_down"

# The message shortcut "Correct this answer", and the modal it opens.
CORRECT_SHORTCUT = "expertbot_correct"
CORRECTION_VIEW = "expertbot_correction"
CORRECTION_BLOCK = "correction"
CORRECTION_INPUT = "text"

# The default slash command (configurable: slack.command).
DEFAULT_COMMAND = "/expertbot"

# Bolt's conventional path for events, interactivity, slash commands and shortcuts.
EVENTS_PATH = "/slack/events"
