"""The cluster tier: leases and resume records shared through Redis."""
