"""The engine tier: the ordered engine stage, batch and streaming stages, the one way a final is
built, failover, circuit breakers, the shared inference pools and upload jobs, and the provider
registry."""
