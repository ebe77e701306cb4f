"""The relay's view in Redis: key names and the Lua scripts of the balance protocol.

Shared by the relay (async client) and the portal/worker (sync client); nothing here imports
Django or does I/O. Amounts are integer nano-dollars (exact in Lua's doubles up to ~$9M).

Per account ``tp:acct:<id>`` is a hash with ``posted`` (the ledger balance), ``seq`` (the ledger
sequence it was read at, so an older write never overwrites a newer one), ``held`` and
``unposted`` (sums); ``tp:acct:<id>:holds`` and ``tp:acct:<id>:unposted`` map request ids to
amounts, so that every step can be repeated after a crash without counting twice.
"""

from __future__ import annotations

KEY_RECORD = "tp:key:"  # + digest -> JSON key record
CATALOG = "tp:catalog"  # JSON: models, aliases, routes, prices
EVICT_CHANNEL = "tp:evict"  # messages: "key:<digest>", "catalog", "*"
HOLD_TIMES = "tp:holds:ts"  # zset "<account>|<request id>" -> unix time the hold was placed


def key_record(digest: str) -> str:
    return KEY_RECORD + digest


def account(account_id: int | str) -> str:
    return f"tp:acct:{account_id}"


def account_holds(account_id: int | str) -> str:
    return f"tp:acct:{account_id}:holds"


def account_unposted(account_id: int | str) -> str:
    return f"tp:acct:{account_id}:unposted"


def hold_member(account_id: int | str, request_id: str) -> str:
    return f"{account_id}|{request_id}"


# KEYS: account, holds, hold times. ARGV: request id, amount, now, hold member.
# Returns 1 when held (or already held), 0 when the available balance cannot pay,
# -1 when the account has no posted balance in Redis (never synced: treat as empty).
RESERVE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
local posted = redis.call('HGET', KEYS[1], 'posted')
if not posted then return -1 end
local held = tonumber(redis.call('HGET', KEYS[1], 'held') or '0')
local unposted = tonumber(redis.call('HGET', KEYS[1], 'unposted') or '0')
local amount = tonumber(ARGV[2])
if tonumber(posted) - unposted - held < amount then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'held', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

# KEYS: account, holds, unposted, hold times. ARGV: request id, actual cost, hold member.
# Moves the request from holds to unposted at its actual cost; repeating it changes nothing.
SETTLE = """
local amt = redis.call('HGET', KEYS[2], ARGV[1])
if amt then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
  redis.call('ZREM', KEYS[4], ARGV[3])
end
if tonumber(ARGV[2]) > 0 and redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'unposted', ARGV[2])
end
return 1
"""

# KEYS: account, holds, hold times. ARGV: request id, hold member. Drops a hold unbilled.
RELEASE = """
local amt = redis.call('HGET', KEYS[2], ARGV[1])
if amt then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'held', -tonumber(amt))
end
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""

# KEYS: account, unposted. ARGV: ledger seq, ledger balance in nanos, request ids recorded.
# Writes the balance unless a newer one is there, and forgets the recorded requests' unposted
# costs (they are in the ledger now). Safe to repeat for a redelivered batch.
POST = """
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '-1')
if tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'posted', ARGV[2])
end
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[2], ARGV[i])
  if v then
    redis.call('HDEL', KEYS[2], ARGV[i])
    redis.call('HINCRBY', KEYS[1], 'unposted', -tonumber(v))
  end
end
return 1
"""
