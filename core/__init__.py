"""The pure core: what the relay and the Django apps share, with no Django and no I/O — the key
format, money and the one cost function, the Redis key schema and its Lua scripts."""
