from __future__ import annotations

from celery import shared_task

from core import state
from lib.redis import client

from . import figures, sync


# Both time limits, as every task has (tests/test_beat.py); beat sends it every minute, so a
# run that cannot finish in one is given up rather than piled up.
@shared_task(name="catalog.publish_route_figures", time_limit=55, soft_time_limit=45)
def publish_route_figures() -> int:
    """The routes' live figures for the relays (``/v1/models/{id}/endpoints``), and the
    rollup's hours past the week dropped. A catalog Redis has lost (a master restarted without
    persistence, a flush) is published again first: relays keep serving the one they loaded
    meanwhile, but a relay that starts needs it."""
    if not client().exists(state.CATALOG):
        sync.publish()
    figures.prune()
    return figures.publish()
