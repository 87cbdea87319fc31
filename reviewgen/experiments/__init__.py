"""Experiments built on the tasks: the demo, the classifier study and sweep, and their plots."""
