from __future__ import annotations

from django import template

from lib import money

register = template.Library()
register.filter("usd", money.usd)
