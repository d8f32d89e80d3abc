"""The flows' steps: one function each, run by the step runner."""
