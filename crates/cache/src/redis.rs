//! A store in Redis, shared by every process that uses the same server and prefix.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_cache_semantics::CachePolicy;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use seawall_core::{ConfigError, check_range};
use serde::{Deserialize, Serialize};

use crate::entry::{CachedResponse, Vary};
use crate::key::CacheKey;
use crate::store::{CacheStore, StoreError, StoreFuture};

/// A store in Redis: each entry is one string value (the answer's head and freshness in a
/// binary form, then the body) under `prefix` + the key's hex digest, set to expire when the
/// entry may be forgotten, so that every process sharing the server shares the answers.
///
/// A Redis failure or timeout is a miss (or an answer not stored), counted in
/// [`CacheStats::store_errors`](crate::CacheStats::store_errors); it never fails a request.
/// Entries hold no credential: keys are digests, and the request headers an answer varies
/// on are kept as digests when they are credentials.
#[derive(Clone)]
pub struct RedisStore {
    connection: Arc<Connection>,
    prefix: Arc<str>,
}

/// The client and its connection manager, replaced after a command times out: the redis
/// crate remakes a connection only after an error it reads as a broken link, and a timeout
/// is not one, so a connection gone silent (a dropped NAT flow, a host gone without a reset)
/// would cost every lookup its timeout until the kernel gave up on it, about 15 minutes.
struct Connection {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
}

impl Connection {
    /// Runs `command`, dropping the connection it used if it timed out.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> redis::RedisResult<T> {
        let used = self.manager.load_full();
        let mut manager = (*used).clone();
        let answer = command.query_async(&mut manager).await;
        if let Err(error) = &answer
            && error.is_timeout()
            && let Ok(fresh) =
                ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            // A command that timed out at the same time may have replaced it already.
            self.manager.compare_and_swap(&used, Arc::new(fresh));
        }
        answer
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the server at `url` (`redis://host:port/db`), connecting on first use,
    /// with keys under `seawall:cache:` and a timeout of 1 s per command.
    pub fn new(url: &str) -> Result<Self, ConfigError> {
        Self::with_options(url, "seawall:cache:", Duration::from_secs(1))
    }

    /// A store on the server at `url`, with keys under `prefix` (at most 64 bytes) and a
    /// timeout for connecting and for each command (1 ms to 60 s).
    pub fn with_options(url: &str, prefix: &str, timeout: Duration) -> Result<Self, ConfigError> {
        check_range(
            "timeout",
            timeout,
            Duration::from_millis(1),
            Duration::from_secs(60),
            "a duration from 1 ms to 60 s",
        )?;
        check_range(
            "prefix",
            prefix.len(),
            0,
            64,
            "a prefix of at most 64 bytes",
        )?;
        // The URL is not shown: it may hold a password.
        let url_error = || ConfigError::new("url", "(hidden)", "a redis:// URL");
        let client = redis::Client::open(url).map_err(|_| url_error())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|_| url_error())?;
        Ok(RedisStore {
            connection: Arc::new(Connection {
                client,
                config,
                manager: ArcSwap::from_pointee(manager),
            }),
            prefix: prefix.into(),
        })
    }

    /// The Redis key of an entry.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.prefix, key.to_hex())
    }
}

impl CacheStore for RedisStore {
    fn get(&self, key: &CacheKey) -> StoreFuture<Result<Option<Arc<CachedResponse>>, StoreError>> {
        let connection = Arc::clone(&self.connection);
        let key = self.redis_key(key);
        StoreFuture::pending(async move {
            let value: Option<Vec<u8>> = connection.query(redis::cmd("GET").arg(&key)).await?;
            match value {
                None => Ok(None),
                // Another layout's entry (a process of another version sharing the server)
                // is a miss, not a store error: the answer fetched replaces it.
                Some(value) if value.first() != Some(&VERSION) => Ok(None),
                Some(value) => Ok(Some(Arc::new(decode(Bytes::from(value))?))),
            }
        })
    }

    fn put(
        &self,
        key: CacheKey,
        entry: Arc<CachedResponse>,
    ) -> StoreFuture<Result<(), StoreError>> {
        let connection = Arc::clone(&self.connection);
        let key = self.redis_key(&key);
        StoreFuture::pending(async move {
            let keep_ms = u64::try_from(entry.keep_for().as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let value = encode(&entry)?;
            let () = connection
                .query(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(keep_ms),
                )
                .await?;
            Ok(())
        })
    }

    fn remove(&self, key: &CacheKey) -> StoreFuture<Result<(), StoreError>> {
        let connection = Arc::clone(&self.connection);
        let key = self.redis_key(key);
        StoreFuture::pending(async move {
            let _removed: u64 = connection.query(redis::cmd("DEL").arg(&key)).await?;
            Ok(())
        })
    }
}

/// The layout's version, first byte of every value; a value of another version is a miss.
const VERSION: u8 = 2;

#[derive(Serialize, Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    policy: CachePolicy,
    stored_at_ms: u64,
    age_base_s: u64,
    fresh_until_ms: u64,
    stale_until_ms: u64,
    keep_until_ms: u64,
    /// `None` for `Vary: *`.
    vary: Option<Vec<(String, Option<Vec<u8>>)>>,
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn time(millis: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
}

/// `VERSION`, the head's length (4 bytes, little-endian), the head in postcard's binary form,
/// the body. A binary form, because the policy's copies of the headers keep their bytes only
/// in one: in JSON a value that is not UTF-8 was dropped, and a request weighed by the
/// policy (one with its own `Cache-Control`) then missed the entry it varied on.
fn encode(entry: &CachedResponse) -> Result<Vec<u8>, StoreError> {
    let head = Head {
        status: entry.status.as_u16(),
        headers: entry
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect(),
        policy: entry.policy.clone(),
        stored_at_ms: millis(entry.stored_at),
        age_base_s: entry.age_base.as_secs(),
        fresh_until_ms: millis(entry.fresh_until),
        stale_until_ms: millis(entry.stale_until),
        keep_until_ms: millis(entry.keep_until),
        vary: match &entry.vary {
            Vary::Any => None,
            Vary::Fields(fields) => Some(
                fields
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_owned(),
                            value.as_ref().map(|v| v.as_bytes().to_vec()),
                        )
                    })
                    .collect(),
            ),
        },
    };
    let head = postcard::to_stdvec(&head)?;
    let length = u32::try_from(head.len())?;
    let mut value = Vec::with_capacity(5 + head.len() + entry.body.len());
    value.push(VERSION);
    value.extend_from_slice(&length.to_le_bytes());
    value.extend_from_slice(&head);
    value.extend_from_slice(&entry.body);
    Ok(value)
}

fn decode(value: Bytes) -> Result<CachedResponse, StoreError> {
    let malformed = || -> StoreError { "a cache entry in Redis is malformed".into() };
    if value.first() != Some(&VERSION) || value.len() < 5 {
        return Err(malformed());
    }
    let mut length = [0; 4];
    length.copy_from_slice(&value[1..5]);
    let end = 5usize
        .checked_add(u32::from_le_bytes(length) as usize)
        .filter(|end| *end <= value.len())
        .ok_or_else(malformed)?;
    let head: Head = postcard::from_bytes(&value[5..end])?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for (name, value) in head.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_bytes(&value)?,
        );
    }
    let vary = match head.vary {
        None => Vary::Any,
        Some(fields) => Vary::Fields(
            fields
                .into_iter()
                .map(|(name, value)| {
                    Ok((
                        HeaderName::from_bytes(name.as_bytes())?,
                        value.map(|v| HeaderValue::from_bytes(&v)).transpose()?,
                    ))
                })
                .collect::<Result<_, StoreError>>()?,
        ),
    };
    Ok(CachedResponse {
        status: StatusCode::from_u16(head.status)?,
        headers,
        body: value.slice(end..),
        policy: head.policy,
        stored_at: time(head.stored_at_ms),
        age_base: Duration::from_secs(head.age_base_s),
        fresh_until: time(head.fresh_until_ms),
        stale_until: time(head.stale_until_ms),
        keep_until: time(head.keep_until_ms),
        vary,
    })
}
