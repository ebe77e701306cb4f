"""Small Django helpers shared by the apps: the Redis client and eviction messages, money
fields and formatting. Nothing here knows about accounts, keys, billing or the portal."""
