"""The engine tier: the ordered engine stage, batch and streaming stages, failover, circuit
breakers, the shared inference pools and upload jobs, and the provider registry."""
