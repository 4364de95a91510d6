//! The Lua scripts the Redis store runs: one per step, each touching the one key of its record,
//! so every step is one round trip and runs unchanged on Redis Cluster (a script's keys must
//! share a slot, and one key always does).
//!
//! A record is a hash: `f` the request's fingerprint, `t` the owner token, `s` the response
//! status (absent while in progress, -1 for FAILED_STORAGE), `h` the headers as JSON (absent
//! for a plain function's value), `b` the body, and the times in milliseconds of the server's
//! clock: `l` the lease's end, `e` the record's expiry, `c` its creation and `u` its last
//! change. Every script reads the clock with `TIME`, so leases and expiry are judged by the
//! server's clock, never a client's; Redis 5 and later replicate a script's effects, not the
//! script, so a replica never reads its own clock. The key expires with `PEXPIREAT` at `e`.
//!
//! Each script is sent as `EVALSHA`; on `NOSCRIPT` (a restarted server, a failover, a new
//! cluster node) `redis::Script` loads it with `SCRIPT LOAD` and sends it again.

use std::sync::LazyLock;

use redis::Script;

/// The lines every script starts with: the server's clock in milliseconds, and whole numbers
/// written as digits (Lua's default would write a large one in exponent form).
const PRELUDE: &str = "
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function int(n) return string.format('%d', n) end
";

/// Claims the key or returns the record that stands (docs/contract.md, "4. Records").
///
/// `ARGV`: fingerprint, owner token, lease (ms), ttl (ms). Answers `{acquired}` (`new`,
/// `abandoned` or `failed_storage`) padded to six items, or `{nil, fingerprint, status,
/// headers, body, lease left (ms)}`.
const CLAIM: &str = "
local r = redis.call('HMGET', KEYS[1], 'f', 's', 'l', 'e', 'h', 'b', 'c')
local acquired = false
local created = now
if not r[1] or tonumber(r[4]) <= now then
  acquired = 'new'
elseif r[1] == ARGV[1] then
  if r[2] == '-1' then
    acquired = 'failed_storage'
  elseif not r[2] and tonumber(r[3]) <= now then
    acquired = 'abandoned'
  end
  created = tonumber(r[7]) or now
end
if not acquired then
  return {false, r[1], r[2], r[5], r[6], math.max(0, tonumber(r[3]) - now)}
end
local expires = now + tonumber(ARGV[4])
if r[1] then
  redis.call('HDEL', KEYS[1], 's', 'h', 'b')
end
redis.call('HSET', KEYS[1], 'f', ARGV[1], 't', ARGV[2], 'l', int(now + tonumber(ARGV[3])),
  'e', int(expires), 'c', int(created), 'u', int(now))
redis.call('PEXPIREAT', KEYS[1], int(expires))
return {acquired, false, false, false, false, 0}
";

/// Extends a live claim's lease. `ARGV`: owner token, lease (ms). Answers 1 if still owned.
const RENEW: &str = "
local r = redis.call('HMGET', KEYS[1], 't', 's')
if r[1] ~= ARGV[1] or r[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'l', int(now + tonumber(ARGV[2])), 'u', int(now))
return 1
";

/// Stores the payload. `ARGV`: owner token, status, headers JSON (empty for a value), body,
/// ttl (ms). Answers 1 if still owned.
const COMPLETE: &str = "
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then
  return 0
end
local expires = now + tonumber(ARGV[5])
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], 's', ARGV[2], 'b', ARGV[4], 'e', int(expires), 'u', int(now))
  redis.call('HDEL', KEYS[1], 'h')
else
  redis.call('HSET', KEYS[1], 's', ARGV[2], 'h', ARGV[3], 'b', ARGV[4], 'e', int(expires),
    'u', int(now))
end
redis.call('PEXPIREAT', KEYS[1], int(expires))
return 1
";

/// Marks the record FAILED_STORAGE. `ARGV`: owner token. Answers 1 if still owned.
const FAIL: &str = "
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 's', '-1', 'u', int(now))
redis.call('HDEL', KEYS[1], 'h', 'b')
return 1
";

/// Deletes the claimed record while it is in progress. `ARGV`: owner token. Answers 1 if
/// deleted.
const RELEASE: &str = "
local r = redis.call('HMGET', KEYS[1], 't', 's')
if r[1] ~= ARGV[1] or r[2] then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
";

/// Reads a live record: `{fingerprint, status, headers, body, lease left (ms)}`, or nil.
const GET: &str = "
local r = redis.call('HMGET', KEYS[1], 'f', 's', 'h', 'b', 'l', 'e')
if not r[1] or tonumber(r[6]) <= now then
  return false
end
return {r[1], r[2], r[3], r[4], math.max(0, tonumber(r[5]) - now)}
";

/// What an operator sees of a live record, never its body: `{status, headers (only to count
/// them), body bytes, age, since update, expires in, lease left}` (ms), or nil.
const INSPECT: &str = "
local r = redis.call('HMGET', KEYS[1], 's', 'h', 'l', 'e', 'c', 'u')
if not r[4] or tonumber(r[4]) <= now then
  return false
end
return {r[1], r[2], redis.call('HSTRLEN', KEYS[1], 'b'), math.max(0, now - tonumber(r[5])),
  math.max(0, now - tonumber(r[6])), math.max(0, tonumber(r[4]) - now),
  math.max(0, tonumber(r[3]) - now)}
";

/// The scripts, each made once (its SHA1 computed once) for every store in the process.
pub(super) struct Scripts {
    pub claim: Script,
    pub renew: Script,
    pub complete: Script,
    pub fail: Script,
    pub release: Script,
    pub get: Script,
    pub inspect: Script,
}

/// The scripts of every Redis store.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
    Scripts {
        claim: script(CLAIM),
        renew: script(RENEW),
        complete: script(COMPLETE),
        fail: script(FAIL),
        release: script(RELEASE),
        get: script(GET),
        inspect: script(INSPECT),
    }
});
