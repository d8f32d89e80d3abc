"""Integration-test harness for torcx-tectonic."""
