"""What billing's lower modules announce to the ones above them (which they cannot import).

The payment state machine and usage recording sit below the balance alerts (which start auto
top-ups through a provider), so they tell the alerts what happened instead of calling them.
"""

from django.dispatch import Signal

# Sent with ``account_id`` and ``auto_topup`` (bool) by billing.payments.confirm, after the
# commit that credited a payment: the alerts clear the auto top-up failures of a successful auto
# top-up and re-arm the low-balance email of a balance back above its threshold.
credited = Signal()

# Sent with ``account_ids`` by billing.usage.record_batch, after the commit that debited new
# usage: the alerts queue a balance check for the accounts that asked for an alert or for auto
# top-up.
debited = Signal()
