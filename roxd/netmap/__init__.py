"""The container communication map (docs/netmap.md): `flows.py` aggregates connects into
flows, `addresses.py` reads which container or host owns an address."""
