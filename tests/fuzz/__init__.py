"""A message fuzzer for every RPC the server serves (``tests/integration/test_fuzz.py`` runs it).

``services``: the RPCs, found from the service descriptors. ``generator``: seeded payloads (random
bytes, generated and mutated messages with extreme and non-finite values, truncated and bit-flipped
encodings; streams of them). ``fixture``: the state it runs against, whose requests also seed the
mutations. ``state``: a snapshot of stored state through read RPCs. ``runner``: sends them and
judges each answer.
"""
