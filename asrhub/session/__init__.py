"""The session tier: one session's stream, its delivery to subscribers, and resume."""
