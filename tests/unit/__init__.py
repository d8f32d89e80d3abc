"""Unit tests of the torcx_tectonic helper package (no systemd, no network beyond 127.0.0.1)."""
