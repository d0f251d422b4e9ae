"""The adversary: oracles (images in, images out) and harvesting. Never imports imgsteal.victim."""
