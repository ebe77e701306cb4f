"""What the keys app announces to the apps above it (which it cannot import)."""

from django.dispatch import Signal

# Sent with ``key`` (an active ApiKey) and ``rebuild`` (True from syncredis) just before its
# record is written to the relay's view: billing seeds the key's spend-cap counter from the
# recorded usage first, so no relay sees a cap whose counter is missing.
publishing = Signal()
