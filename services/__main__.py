"""``python -m services``: the same as the ``jobreaper`` command."""

from services.cli import main

main()
