"""``python -m devtools``: the same as the ``jobreaper-dev`` command."""

from devtools.cli import main

main()
