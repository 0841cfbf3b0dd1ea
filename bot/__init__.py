"""Everything Slack: the Bolt app, the /ir grammar, Block Kit views, the CLI."""
