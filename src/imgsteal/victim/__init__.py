"""The victim owner's side: training entry points, inference (Translator) and the local oracle."""
