"""A staged scan: discover (domain shards), probe (address shards), verdict (domain shards).

The stages share a directory of compressed files (`records.py`) and reuse the
one-process scan's code: discover is the scan with its probes left open
(`discover.py`), probe runs `Scanner.probe_address` for the addresses of its shard
(`probe.py`), verdict joins the two and judges (`verdict.py`). `compare.py` says what
two scans of one world must agree on; `codec.py` reads and writes the typed records;
`cli.py` holds the commands (docs/architecture.md#staged-scans).
"""
