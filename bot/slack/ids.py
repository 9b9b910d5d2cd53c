"""The identifiers the app, its blocks and the app manifest share."""

from __future__ import annotations

# Feedback on every answer: Slack's feedback buttons (`feedback_buttons` in a `context_actions`
# block), whose values are `up:<answer id>` and `down:<answer id>`.
FEEDBACK_BLOCK = "expertbot_feedback"
FEEDBACK_ACTION = "expertbot_feedback"
# The plain 👍 / 👎 buttons of answers posted before (value: the answer id); still honoured.
FEEDBACK_UP = "expertbot_feedback_up"
FEEDBACK_DOWN = "expertbot_feedback_down"

# The App Home tab: an expert's Approve / Correct on an answer to review (value: the answer id),
# an admin's job buttons (value: the job).
HOME_APPROVE = "expertbot_home_approve"
HOME_CORRECT = "expertbot_home_correct"
HOME_JOB = "expertbot_home_job"

# The message shortcut "Correct this answer", and the modal it opens.
CORRECT_SHORTCUT = "expertbot_correct"
CORRECTION_VIEW = "expertbot_correction"
CORRECTION_BLOCK = "correction"
CORRECTION_INPUT = "text"

# The Events API events the app listens to; the manifest subscribes to them (`message` as
# message.channels, message.groups, message.im and message.mpim).
EVENTS = (
    "app_mention",
    "message",
    "reaction_added",
    "reaction_removed",
    "app_home_opened",
    "app_context_changed",
)

# The default slash command (configurable: slack.command).
DEFAULT_COMMAND = "/expertbot"

# Bolt's conventional path for events, interactivity, slash commands and shortcuts.
EVENTS_PATH = "/slack/events"
