"""Image IO, dataset folder layouts, the pair store and paired augmentations."""
