"""The simulated node: a whole Container Linux node and its cluster, for `make node` and the integration tests.

A real systemd booted in systemd-nspawn with the bundle installed by `make
install`, and stand-ins that speak the real protocols for what cannot run
here: update_engine on the node's D-Bus system bus, an HTTPS release bucket
with really signed manifests and real torcx addons, and a TLS api-server
that plays the update operator.
"""
