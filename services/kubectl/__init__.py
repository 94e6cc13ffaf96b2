"""``kubectl jobreaper``: a kubectl plugin (the ``kubectl-jobreaper`` console script)
for users who have access to their Jobs but not to Kafka: kill and cancel through
the ``jobreaper.io/kill-timestamp`` annotation, the status of a Job's kill read from
the cluster, and (where Kafka is reachable) the audit timeline."""
