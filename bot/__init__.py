"""Everything that talks to people: the CLI, and later Slack, Teams and the scheduler."""
