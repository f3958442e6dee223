"""The settings of a hub process: the schema, the loader (file < env < flags) and the reference."""
