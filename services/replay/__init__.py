"""``jobreaper replay``: the pure core over the recorded topics.

Reading the history (:mod:`.history`), folding it as a killer partition did
(:mod:`.fold`), the byte-for-byte replay (:mod:`.walk`), the what-if under
another configuration (:mod:`.whatif`, :mod:`.compare`), whole-history runs and
rendering (:mod:`.report`), the command (:mod:`.cli`). Imports only the core,
the schemas, the runtime and the config validation: never the killer's shell.
See docs/replay.md.
"""
