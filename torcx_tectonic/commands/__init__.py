"""The operator's command: status, metrics and mirrors."""
