"""The relay's view in Redis: key names and the Lua scripts of the balance protocol.

Shared by the relay (async client) and the portal/worker (sync client); nothing here imports
Django or does I/O. Amounts are integer nano-dollars (exact in Lua's doubles up to ~$9M).

Every key of one account carries the hash tag ``{a<id>}``, so an account's figures, holds,
key caps and rate-limit windows live in one Redis Cluster slot and each script stays atomic.

- ``tp:{a<id>}`` hash: ``posted`` (the ledger balance), ``seq`` (the ledger sequence it was
  read at, so an older write never overwrites a newer one), ``held`` and ``unposted`` (sums).
- ``…:holds`` request id -> ``"<nanos>|<cap key or empty>|<member cap key or empty>"``;
  ``…:holdts`` request id -> the time the hold was placed (for the sweep of holds whose relay
  died).
- ``…:unposted`` request id -> actual cost not yet in the ledger.
- ``…:cap:<key id>:<period>`` hash ``held``/``spent`` for a key's spend cap in that period;
  ``…:mcap:<user id>:<period>`` the same for an organization member's cap over their keys.
- ``…:rl:<key id>:<r|t>:<minute>`` requests / tokens in that minute.
- ``…:byok`` the account's own provider keys, JSON (``core.byok``), still encrypted; a change is
  announced as ``byok:<account id>`` on the eviction channel.

Every step can be repeated after a crash without counting twice: each is keyed by request id.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta

KEY_RECORD = "tp:key:"  # + digest -> JSON key record
CATALOG = "tp:catalog"  # JSON: models, aliases, routes, prices
EVICT_CHANNEL = "tp:evict"  # messages: "key:<digest>", "byok:<account id>", "catalog", "*"
ROUTE_FIGURES = "tp:route_figures"  # hash: model id -> JSON list of its routes' figures
HOLD_TIMES_PATTERN = "tp:{a*}:holdts"


def key_record(digest: str) -> str:
    return KEY_RECORD + digest


def account(account_id: int | str) -> str:
    return f"tp:{{a{account_id}}}"


def byok(account_id: int | str) -> str:
    return f"tp:{{a{account_id}}}:byok"


BYOK_PATTERN = "tp:{a*}:byok"


def account_holds(account_id: int | str) -> str:
    return f"tp:{{a{account_id}}}:holds"


def account_unposted(account_id: int | str) -> str:
    return f"tp:{{a{account_id}}}:unposted"


def hold_times(account_id: int | str) -> str:
    return f"tp:{{a{account_id}}}:holdts"


def account_of_hold_times(name: str) -> str:
    return name[len("tp:{a") : name.index("}")]


def key_cap(account_id: int | str, key_id: int | str, period: str) -> str:
    return f"tp:{{a{account_id}}}:cap:{key_id}:{period}"


def member_cap(account_id: int | str, user_id: int | str, period: str) -> str:
    """An organization member's spend over all their keys in the account, in a cap period."""
    return f"tp:{{a{account_id}}}:mcap:{user_id}:{period}"


def no_cap(account_id: int | str) -> str:
    """Stands in for the cap key when a key has none (scripts take a fixed list of keys)."""
    return f"tp:{{a{account_id}}}:cap:none"


def rate_window(account_id: int | str, key_id: int | str, kind: str, minute: int) -> str:
    return f"tp:{{a{account_id}}}:rl:{key_id}:{kind}:{minute}"


# ---- spend-cap periods (UTC) -----------------------------------------------------------------

PERIODS = ("day", "week", "month", "total")


def period_bounds(period: str, now: float) -> tuple[str, datetime | None, datetime | None]:
    """(id, start, end) of the period containing ``now``; ``total`` has no bounds."""
    moment = datetime.fromtimestamp(now, tz=UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day.strftime("%Y%m%d"), day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return f"{year}w{week:02d}", start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        return start.strftime("%Y%m"), start, start + timedelta(days=days)
    if period == "total":
        return "total", None, None
    raise ValueError(f"unknown period {period!r}")


def period_ttl(end: datetime | None, now: float | None = None) -> int:
    """Seconds a cap counter must live: to the period's end plus a day of slack; 0 = forever."""
    if end is None:
        return 0
    return int(end.timestamp() - (now if now is not None else time.time())) + 86400


# ---- scripts -----------------------------------------------------------------------------------

# KEYS: account, holds, hold times, key cap (or no_cap), rpm window, tpm window, member cap (or
#       no_cap).
# ARGV: request id, amount, now, cap nanos (-1: none), cap ttl (0: none), rpm limit (-1: none),
#       tpm limit (-1: none), tokens to count, window ttl, member cap nanos (-1: none), member
#       cap ttl (0: none).
# Returns {status, requests used, tokens used}; status 1 held (or already held), 0 the
# available balance cannot pay, -1 the account is not in Redis, -2 the key's spend cap,
# -3 its requests per minute, -4 its tokens per minute, -5 the member's spend cap (an
# organization's member: over all their keys). Key cap, member cap and balance are checked
# together, so none of them is overspent however many requests race.
RESERVE = """
local rid = ARGV[1]
local amount = tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[2], rid) == 1 then return {1, 0, 0} end
local rpm_limit = tonumber(ARGV[6])
local tpm_limit = tonumber(ARGV[7])
local tokens = tonumber(ARGV[8])
local rpm_used = 0
local tpm_used = 0
if rpm_limit >= 0 then
  rpm_used = tonumber(redis.call('GET', KEYS[5]) or '0')
  if rpm_used + 1 > rpm_limit then return {-3, rpm_used, 0} end
end
if tpm_limit >= 0 then
  tpm_used = tonumber(redis.call('GET', KEYS[6]) or '0')
  if tpm_used + tokens > tpm_limit then return {-4, rpm_used, tpm_used} end
end
local posted = redis.call('HGET', KEYS[1], 'posted')
if not posted then return {-1, rpm_used, tpm_used} end
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local unposted = tonumber(redis.call('HGET', KEYS[1], 'unposted') or '0')
if tonumber(posted) - unposted - held < amount then return {0, rpm_used, tpm_used} end
local cap = tonumber(ARGV[4])
if cap >= 0 then
  local c = redis.call('HMGET', KEYS[4], 'spent', 'held')
  if tonumber(c[1] or '0') + tonumber(c[2] or '0') + amount > cap then
    return {-2, rpm_used, tpm_used}
  end
end
local mcap = tonumber(ARGV[10] or '-1')
if mcap >= 0 then
  local c = redis.call('HMGET', KEYS[7], 'spent', 'held')
  if tonumber(c[1] or '0') + tonumber(c[2] or '0') + amount > mcap then
    return {-5, rpm_used, tpm_used}
  end
end
local capkey = ''
if cap >= 0 then
  redis.call('HINCRBY', KEYS[4], 'held', amount)
  if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[4], ARGV[5]) end
  capkey = KEYS[4]
end
local mcapkey = ''
if mcap >= 0 then
  redis.call('HINCRBY', KEYS[7], 'held', amount)
  if tonumber(ARGV[11]) > 0 then redis.call('EXPIRE', KEYS[7], ARGV[11]) end
  mcapkey = KEYS[7]
end
if rpm_limit >= 0 then
  redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], ARGV[9])
end
if tpm_limit >= 0 then
  redis.call('INCRBY', KEYS[6], tokens)
  redis.call('EXPIRE', KEYS[6], ARGV[9])
end
redis.call('HSET', KEYS[2], rid, ARGV[2] .. '|' .. capkey .. '|' .. mcapkey)
redis.call('HINCRBY', KEYS[1], 'held', amount)
redis.call('ZADD', KEYS[3], ARGV[3], rid)
return {1, rpm_used + 1, tpm_used + tokens}
"""

# A hold's value: "<nanos>|<key cap key or empty>|<member cap key or empty>" (holds placed before
# member caps have no third part).
_HOLD = "local amt, ck, mk = string.match(v, '^(%d+)|?([^|]*)|?(.*)$')\n"

# KEYS: account, holds, unposted, hold times, key cap (or no_cap), tpm window, member cap (or
#       no_cap).
# ARGV: request id, actual cost, tokens to add to the tpm window (actual - counted; may be < 0).
# Moves the request from holds to unposted at its actual cost, never more than was held (the
# balance and the cap were checked for that much); repeating it changes nothing. (``0 - amt``,
# not ``-amt``: Lua writes a negated zero as "-0", which HINCRBY refuses, and a free model's
# hold is 0.)
SETTLE = (
    """
local v = redis.call('HGET', KEYS[2], ARGV[1])
local actual = tonumber(ARGV[2])
if v then
"""
    + _HOLD
    + """
  amt = tonumber(amt)
  if actual > amt then actual = amt end
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', 0 - amt)
  redis.call('ZREM', KEYS[4], ARGV[1])
  if ck ~= '' then
    redis.call('HINCRBY', KEYS[5], 'held', 0 - amt)
    redis.call('HINCRBY', KEYS[5], 'spent', actual)
  end
  if mk ~= '' and KEYS[7] then
    redis.call('HINCRBY', KEYS[7], 'held', 0 - amt)
    redis.call('HINCRBY', KEYS[7], 'spent', actual)
  end
  local adjust = tonumber(ARGV[3])
  if adjust ~= 0 and redis.call('EXISTS', KEYS[6]) == 1 then
    redis.call('INCRBY', KEYS[6], adjust)
  end
end
if actual > 0 and redis.call('HSETNX', KEYS[3], ARGV[1], actual) == 1 then
  redis.call('HINCRBY', KEYS[1], 'unposted', actual)
end
return 1
"""
)

# KEYS: account, holds, hold times, key cap (or no_cap), member cap (or no_cap). ARGV: request
# id. Drops a hold unbilled.
RELEASE = (
    """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
"""
    + _HOLD
    + """
  amt = tonumber(amt)
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', 0 - amt)
  if ck ~= '' then redis.call('HINCRBY', KEYS[4], 'held', 0 - amt) end
  if mk ~= '' and KEYS[5] then redis.call('HINCRBY', KEYS[5], 'held', 0 - amt) end
end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""
)

# Posts the ledger's figures for one or more accounts. For each: writes the balance unless a
# newer one is there, and forgets the recorded requests' unposted costs (they are in the ledger
# now). Safe to repeat for a redelivered batch. Called with one account's keys (one slot, as a
# Redis Cluster requires) or, where Redis is one server, with a whole batch's accounts.
# KEYS: account, unposted of each account in turn. ARGV: for each account in the same order,
# its ledger seq, balance in nanos, how many request ids follow, and those ids.
#
# Redis runs one script at a time, and every relay's holds and settles wait while it does, so
# this one does little per request id. A hash of up to 512 small fields is a listpack (Redis's
# default hash-max-listpack-entries), where finding a field is a scan from its start: the
# unposted hash of an account at ~1,000 requests a second is such a hash, and reading a batch's
# ids one by one (or by HMGET) scanned it once an id; 250 ids held Redis ~0.9 ms (1.0-1.4 ms
# under load, in its slow log). A hash of up to 1,024 fields is therefore read whole (HGETALL,
# one scan), and the batch's ids found in it are deleted in the order they were settled, which
# is the hash's own order: each is near its start. A larger hash (a hashtable, where a field is
# found at once) is read by HMGET. Both delete with HDEL, 500 ids a call. The costs leave the
# account's unposted sum in one HINCRBY, flushed before the sum could pass 2^52 (Lua numbers
# are doubles: whole nano-dollars stay exact up to 2^53).
POST_MANY = """
local a = 1
for k = 1, #KEYS, 2 do
  local account, unposted = KEYS[k], KEYS[k + 1]
  local cur = tonumber(redis.call('HGET', account, 'seq') or '-1')
  if tonumber(ARGV[a]) > cur then
    redis.call('HSET', account, 'seq', ARGV[a], 'posted', ARGV[a + 1])
  end
  local last = a + 2 + tonumber(ARGV[a + 2])
  local total = 0
  local function take(v)
    v = tonumber(v)
    if total > 0 and total + v > 4503599627370496 then
      redis.call('HINCRBY', account, 'unposted', 0 - total)
      total = 0
    end
    total = total + v
  end
  if last > a + 2 then
    if redis.call('HLEN', unposted) <= 1024 then
      local all = redis.call('HGETALL', unposted)
      local costs = {}
      for i = 1, #all, 2 do costs[all[i]] = all[i + 1] end
      local known = {}
      for i = a + 3, last do
        local v = costs[ARGV[i]]
        if v then
          take(v)
          costs[ARGV[i]] = nil
          known[#known + 1] = ARGV[i]
        end
      end
      for first = 1, #known, 500 do
        redis.call('HDEL', unposted, unpack(known, first, math.min(first + 499, #known)))
      end
    else
      for first = a + 3, last, 500 do
        local ids = {}
        for i = first, math.min(first + 499, last) do ids[#ids + 1] = ARGV[i] end
        local values = redis.call('HMGET', unposted, unpack(ids))
        local known = {}
        for i = 1, #ids do
          if values[i] then
            take(values[i])
            known[#known + 1] = ids[i]
          end
        end
        if #known > 0 then redis.call('HDEL', unposted, unpack(known)) end
      end
    end
  end
  if total ~= 0 then redis.call('HINCRBY', account, 'unposted', 0 - total) end
  a = last + 1
end
return 1
"""


def cap_keys_of_hold(value: str) -> tuple[str | None, str | None]:
    """The key cap and member cap keys a hold charged, from its stored value
    ``"<nanos>|<key cap>|<member cap>"``."""
    parts = value.split("|")
    key_cap = parts[1] if len(parts) > 1 else ""
    member = parts[2] if len(parts) > 2 else ""
    return key_cap or None, member or None


# ---- route health: one circuit breaker per route, shared by every relay --------------------
#
# All breakers live under the hash tag ``{breakers}`` (one Redis Cluster slot), so the script
# below stays atomic; they see traffic only on failures, probes and one flush a second.
# - ``tp:{breakers}`` route id -> JSON ``{f: consecutive failures, ws: window start (ms), n:
#   requests in the window, e: failures in it, u: open until (ms; 0 closed), cd: cool-down}``.
# - ``…:open`` route id -> ``"<open until ms>|<failures>"``: what relays poll (usually empty).
# - ``…:probe:<route id>`` the half-open probe's lease (SET NX PX).

BREAKERS = "tp:{breakers}"
BREAKERS_OPEN = "tp:{breakers}:open"


def route_id(model: str, provider: str, upstream_model: str) -> str:
    return f"{model}|{provider}|{upstream_model}"


def breaker_probe(route: str) -> str:
    return f"tp:{{breakers}}:probe:{route}"


# KEYS: breakers, open, probe lease. ARGV: route id, successes, failures, now (ms), probe (1/0),
# consecutive failures that open, window (ms), min requests in the window, failure percentage
# that opens, cool-down (ms), longest cool-down (ms).
# Returns {1 open / 0 closed, open until (ms), consecutive failures}. While open, outcomes of
# requests that were not the probe change nothing; the probe's closes the breaker (success) or
# re-opens it with the cool-down doubled, up to the longest.
BREAKER = """
if ARGV[5] == '1' then redis.call('DEL', KEYS[3]) end
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local b = {f = 0, ws = 0, n = 0, e = 0, u = 0, cd = 0}
if raw then b = cjson.decode(raw) end
local ok = tonumber(ARGV[2])
local failed = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if b.u > 0 then
  if ARGV[5] ~= '1' then return {1, b.u, b.f} end
  if failed == 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('HDEL', KEYS[2], ARGV[1])
    return {0, 0, 0}
  end
  b.cd = math.min(b.cd * 2, tonumber(ARGV[11]))
  b.u = now + b.cd
  b.f = b.f + failed
else
  if now - b.ws >= tonumber(ARGV[7]) then
    b.ws = now
    b.n = 0
    b.e = 0
  end
  b.n = b.n + ok + failed
  b.e = b.e + failed
  if ok > 0 then b.f = 0 end
  b.f = b.f + failed
  local rate = b.n >= tonumber(ARGV[8]) and b.e * 100 >= tonumber(ARGV[9]) * b.n
  if b.f < tonumber(ARGV[6]) and not rate then
    redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(b))
    return {0, 0, b.f}
  end
  b.cd = tonumber(ARGV[10])
  b.u = now + b.cd
  b.n = 0
  b.e = 0
end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(b))
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d|%d', b.u, b.f))
return {1, b.u, b.f}
"""
