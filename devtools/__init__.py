"""jobreaper's development tools: the local stack and the live demo (``jobreaper-dev``).

Not part of the product: a uv workspace member of its own (``devtools/pyproject.toml``)
that depends on jobreaper; the image and the jobreaper wheel never contain it, and
nothing in ``schemas``, ``core`` or ``services`` imports it (import-linter).
"""
