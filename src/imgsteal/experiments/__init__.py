"""Grids of surrogate trainings (fraction x augmentation x seed) and their aggregation."""
