"""Microsoft Teams, through the Microsoft 365 Agents SDK, on the same aiohttp server as Slack."""
