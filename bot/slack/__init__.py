"""Slack: slack-bolt's AsyncApp on the project's aiohttp server (or Socket Mode)."""
