"""The durable, tamper-evident audit trail: one record per decision, hash-chained.

- :mod:`.chain`   canonical JSON, record hashes
- :mod:`.segment` the files of an audit directory, reading records
- :mod:`.log`     the files: lock, recovery, appends, rotation, retention, HEAD
- :mod:`.writer`  the one writer task: group commit, fsync modes, failing closed
- :mod:`.forward` shipping records to a collector (OPA decision-log upload format)
- :mod:`.trail`   the trail of a running service and its recorder
- :mod:`.verify`  checking a trail end to end
- :mod:`.replay`  re-evaluating recorded inputs on a candidate bundle

docs/audit.md describes the record format, hashing and durability modes.
"""
