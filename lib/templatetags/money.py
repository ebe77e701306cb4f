from __future__ import annotations

from django import template

from lib import money

register = template.Library()
# On pages money is read, so the filter writes it in the reader's format; a value an input or a
# data attribute carries takes ``usd_plain``.
register.filter("usd", money.usd_text)
register.filter("usd_plain", money.usd)
