"""``jobreaper-dev demo``: the live demo of jobreaper on the local stack."""
