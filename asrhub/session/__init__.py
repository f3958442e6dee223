"""The session tier: one session's stream and its concrete context, its delivery to
subscribers, and resume."""
