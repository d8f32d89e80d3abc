"""The node's own facts and services: os-release, update_engine, systemd, kubelet.env."""
