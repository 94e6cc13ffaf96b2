"""``jobreaper notify``: forwards kill alerts to a webhook, at least once."""
