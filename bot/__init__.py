"""Everything that talks to people: the CLI, the web server with Slack and Teams, the
admin operations and the scheduler."""
