"""The sysext backend: the runtime's system extension image."""
