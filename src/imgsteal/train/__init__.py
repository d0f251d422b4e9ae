"""Training loops and checkpoints. Loops know nothing of the CLI."""
