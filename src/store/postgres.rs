//! Postgres as a fleet's shared state (`[server] state = "postgres"`): versioned migrations run
//! at start (under an advisory lock, so instances starting together apply each once), the runtime
//! configuration's versions, and the change notification: a version is inserted and announced
//! with `pg_notify` in one statement, so every listening instance hears of it when it commits.
//!
//! LISTEN/NOTIFY rather than Redis pub/sub: the notification is part of the transaction that
//! writes the change (never announced without being written, never written without being
//! announced to the listeners connected at that moment), and a fleet that shares its state in
//! Postgres needs no second service for it. Notifications are at most once (a listener that was
//! disconnected misses them), so instances also poll the newest version number as a safety net.

use std::sync::Arc;

use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::task::TaskTracker;

use super::StoreError;
use super::versions::{Fut, Version, VersionStore};

/// The channel version numbers are announced on.
pub const CHANNEL: &str = "switchyard_config";

/// Schema changes, in order; each runs once per database.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE switchyard_config_versions (
            n BIGINT PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            version JSONB NOT NULL
        )",
    ),
    (
        2,
        "CREATE TABLE switchyard_request_log (
            id BIGSERIAL PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            request_id TEXT NOT NULL,
            record JSONB NOT NULL
        );
        CREATE INDEX switchyard_request_log_at ON switchyard_request_log (at_ms, id);
        CREATE INDEX switchyard_request_log_request_id ON switchyard_request_log (request_id)",
    ),
    (
        3,
        "CREATE TABLE switchyard_mcp_servers (
            name TEXT PRIMARY KEY,
            spec JSONB NOT NULL
        )",
    ),
    (
        4,
        "CREATE TABLE switchyard_gov_entities (
            name TEXT PRIMARY KEY,
            record JSONB NOT NULL
        );
        CREATE TABLE switchyard_gov_version (
            one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
            n BIGINT NOT NULL
        );
        INSERT INTO switchyard_gov_version (n) VALUES (0)",
    ),
    (
        5,
        "CREATE TABLE switchyard_responses (
            id TEXT COLLATE \"C\" PRIMARY KEY,
            tenant TEXT NOT NULL,
            expires_at_ms BIGINT NOT NULL,
            record JSONB NOT NULL
        );
        CREATE INDEX switchyard_responses_expiry ON switchyard_responses (expires_at_ms)",
    ),
    (
        6,
        "CREATE TABLE switchyard_cache_stats (
            instance TEXT PRIMARY KEY,
            updated_ms BIGINT NOT NULL,
            snapshot JSONB NOT NULL
        )",
    ),
    (
        7,
        "CREATE TABLE switchyard_records (
            id BIGSERIAL PRIMARY KEY,
            log TEXT NOT NULL,
            at_ms BIGINT NOT NULL,
            record JSONB NOT NULL
        );
        CREATE INDEX switchyard_records_log ON switchyard_records (log, at_ms, id)",
    ),
];

/// One request log row: (unix ms, request id, the record as JSON text).
pub type LogRow = (i64, String, String);

fn pg(e: tokio_postgres::Error) -> StoreError {
    // The driver's messages name the server and the failure, not the password.
    let mut text = e.to_string();
    if let Some(db) = e.as_db_error() {
        text = format!("{}: {}", db.code().code(), db.message());
    }
    StoreError::Postgres(text)
}

/// A connection to the shared database, reopened when it drops.
pub struct Postgres {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    /// The tasks that drive the connections. Not the gateway's tracker: a connection lives as
    /// long as its client, so the request log can still write its last records during a
    /// graceful shutdown, and waiting for it would never end.
    tasks: TaskTracker,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Postgres(***)")
    }
}

impl Postgres {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pg = Self {
            url: url.to_owned(),
            client: tokio::sync::Mutex::new(None),
            tasks: TaskTracker::new(),
        };
        pg.migrate().await?;
        Ok(pg)
    }

    async fn open(&self) -> Result<(Client, tokio::sync::mpsc::Receiver<String>), StoreError> {
        let (client, mut connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(pg)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        // Ends when the client is dropped (or the connection breaks).
        self.tasks.spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = futures_util::StreamExt::next(&mut messages).await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = tx.try_send(n.payload().to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "the connection to Postgres closed");
                        break;
                    }
                }
            }
        });
        Ok((client, rx))
    }

    /// The shared client, connecting again when the last one closed.
    async fn client(&self) -> Result<Arc<Client>, StoreError> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        let (client, _) = self.open().await?;
        let client = Arc::new(client);
        *guard = Some(client.clone());
        Ok(client)
    }

    /// A connection of its own with a transaction open: dropped without `COMMIT`, the server
    /// rolls it back.
    async fn begin(&self) -> Result<Client, StoreError> {
        let (client, _) = self.open().await?;
        client.batch_execute("BEGIN").await.map_err(pg)?;
        Ok(client)
    }

    /// Runs one statement on the shared client: the rows it changed.
    async fn exec(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        self.client().await?.execute(sql, params).await.map_err(pg)
    }

    /// The first column (JSON) of every row `sql` returns.
    async fn json_column(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(sql, params)
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Whether the database answers now (within a second).
    pub async fn ping(&self) -> bool {
        let check = async {
            self.client()
                .await?
                .simple_query("SELECT 1")
                .await
                .map_err(pg)
        };
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(1), check).await,
            Ok(Ok(_))
        )
    }

    /// A connection of its own that listens on [`CHANNEL`]: the announced version numbers (the
    /// receiver ends when the connection drops; keep the client while listening).
    pub async fn listen(
        &self,
    ) -> Result<(Client, tokio::sync::mpsc::Receiver<String>), StoreError> {
        let (client, rx) = self.open().await?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(pg)?;
        Ok((client, rx))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // A connection of its own: the transaction must not interleave with other queries.
        let (mut client, _) = self.open().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS switchyard_migrations (
                    id INT PRIMARY KEY,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                )",
            )
            .await
            .map_err(pg)?;
        let tx = client.transaction().await.map_err(pg)?;
        // One migrator at a time across the fleet.
        tx.execute("SELECT pg_advisory_xact_lock(7215001)", &[])
            .await
            .map_err(pg)?;
        let applied: Vec<i32> = tx
            .query("SELECT id FROM switchyard_migrations", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (id, sql) in MIGRATIONS {
            if applied.contains(id) {
                continue;
            }
            tx.batch_execute(sql).await.map_err(pg)?;
            tx.execute("INSERT INTO switchyard_migrations (id) VALUES ($1)", &[id])
                .await
                .map_err(pg)?;
            tracing::info!(migration = id, "postgres schema migrated");
        }
        tx.commit().await.map_err(pg)
    }
}

/// The request log of the whole fleet (every instance writes its records here in batches).
impl Postgres {
    /// Appends records in one statement.
    pub async fn log_append(&self, rows: &[LogRow]) -> Result<(), StoreError> {
        let at: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        // JSON text, parsed by the server: cheaper here than building values to encode.
        let recs: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        self.exec(
                "INSERT INTO switchyard_request_log (at_ms, request_id, record)
                 SELECT a, b, c::jsonb FROM UNNEST($1::bigint[], $2::text[], $3::text[]) AS t(a, b, c)",
                &[&at, &ids, &recs],
            )
            .await?;
        Ok(())
    }

    /// Up to `limit` records in `[from, to)`, newest first, before `(at_ms, id)` when given:
    /// `(at_ms, id, record)`.
    pub async fn log_page(
        &self,
        from: i64,
        to: i64,
        before: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<(i64, i64, serde_json::Value)>, StoreError> {
        let (bt, bi) = before.unwrap_or((i64::MAX, i64::MAX));
        Ok(self
            .client()
            .await?
            .query(
                "SELECT at_ms, id, record FROM switchyard_request_log
                 WHERE at_ms >= $1 AND at_ms < $2 AND (at_ms, id) < ($3, $4)
                 ORDER BY at_ms DESC, id DESC LIMIT $5",
                &[&from, &to, &bt, &bi, &limit],
            )
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// The newest record with this request id.
    pub async fn log_by_id(
        &self,
        request_id: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT record FROM switchyard_request_log WHERE request_id = $1
                 ORDER BY at_ms DESC, id DESC LIMIT 1",
                &[&request_id],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0)))
    }

    /// Every record in `[from, to)`, oldest first, handed to `each` as it streams in.
    pub async fn log_scan(
        &self,
        from: i64,
        to: i64,
        mut each: impl FnMut(serde_json::Value),
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let rows = client
            .query_raw(
                "SELECT record FROM switchyard_request_log
                 WHERE at_ms >= $1 AND at_ms < $2 ORDER BY at_ms, id",
                [&from as &(dyn tokio_postgres::types::ToSql + Sync), &to],
            )
            .await
            .map_err(pg)?;
        futures_util::pin_mut!(rows);
        while let Some(row) = futures_util::StreamExt::next(&mut rows).await {
            each(row.map_err(pg)?.get(0));
        }
        Ok(())
    }

    /// Deletes records older than `cutoff` and beyond the newest `max`: how many.
    pub async fn log_prune(&self, cutoff: i64, max: i64) -> Result<u64, StoreError> {
        self.prune("switchyard_request_log", "at_ms", cutoff, max)
            .await
    }

    /// Deletes the rows of `table` whose `time` is before `cutoff`, and the oldest beyond the
    /// newest `max` (by `id`, which sorts by creation): how many.
    async fn prune(
        &self,
        table: &'static str,
        time: &'static str,
        cutoff: i64,
        max: i64,
    ) -> Result<u64, StoreError> {
        let old = self
            .exec(
                &format!("DELETE FROM {table} WHERE {time} < $1"),
                &[&cutoff],
            )
            .await?;
        let over = self
            .exec(
                &format!(
                    "DELETE FROM {table} WHERE id <= (
                        SELECT id FROM {table} ORDER BY id DESC OFFSET $1 LIMIT 1
                     )"
                ),
                &[&max],
            )
            .await?;
        Ok(old + over)
    }
}

/// MCP servers registered through the admin API of any instance.
impl Postgres {
    /// Adds a registration (announced to the fleet); `false` when the name is taken.
    pub async fn mcp_put(&self, name: &str, spec: &serde_json::Value) -> Result<bool, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "WITH ins AS (
                    INSERT INTO switchyard_mcp_servers (name, spec) VALUES ($1, $2)
                    ON CONFLICT (name) DO NOTHING RETURNING name
                )
                SELECT pg_notify('switchyard_config', 'mcp') FROM ins",
                &[&name, spec],
            )
            .await
            .map_err(pg)?;
        Ok(!rows.is_empty())
    }

    /// Removes a registration (announced); `false` when there was none.
    pub async fn mcp_delete(&self, name: &str) -> Result<bool, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "WITH del AS (DELETE FROM switchyard_mcp_servers WHERE name = $1 RETURNING name)
                 SELECT pg_notify('switchyard_config', 'mcp') FROM del",
                &[&name],
            )
            .await
            .map_err(pg)?;
        Ok(!rows.is_empty())
    }

    /// Every registration's spec.
    pub async fn mcp_list(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        self.json_column("SELECT spec FROM switchyard_mcp_servers ORDER BY name", &[])
            .await
    }
}

/// Stored Responses API responses (`store: true`), readable by every instance.
impl Postgres {
    /// Keeps a response (ids are unique: a second write of one id replaces it).
    pub async fn response_put(
        &self,
        id: &str,
        tenant: &str,
        expires_at_ms: i64,
        record: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO switchyard_responses (id, tenant, expires_at_ms, record)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant,
                    expires_at_ms = EXCLUDED.expires_at_ms, record = EXCLUDED.record",
            &[&id, &tenant, &expires_at_ms, record],
        )
        .await?;
        Ok(())
    }

    /// The record under `id` (the caller checks its tenant and expiry).
    pub async fn response_get(&self, id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT record FROM switchyard_responses WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0)))
    }

    /// Deletes `id` if it is `tenant`'s: whether it was there.
    pub async fn response_delete(&self, id: &str, tenant: &str) -> Result<bool, StoreError> {
        let deleted = self
            .exec(
                "DELETE FROM switchyard_responses WHERE id = $1 AND tenant = $2",
                &[&id, &tenant],
            )
            .await?;
        Ok(deleted > 0)
    }

    /// Deletes the expired responses and the oldest beyond `max` (ids sort by creation time).
    pub async fn response_prune(&self, now_ms: i64, max: i64) -> Result<u64, StoreError> {
        // Expired at `now_ms` itself too.
        self.prune(
            "switchyard_responses",
            "expires_at_ms",
            now_ms.saturating_add(1),
            max,
        )
        .await
    }
}

/// Bounded logs shared by the fleet (the cache's what-if candidates and reported wrong answers:
/// `store::BoundedLog`), one table, by log name.
impl Postgres {
    /// Appends a record to `log`.
    pub async fn record_push(
        &self,
        log: &str,
        at_ms: i64,
        record: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO switchyard_records (log, at_ms, record) VALUES ($1, $2, $3)",
            &[&log, &at_ms, record],
        )
        .await?;
        Ok(())
    }

    /// Deletes `log`'s records beyond its newest `kept`.
    pub async fn record_trim(&self, log: &str, kept: i64) -> Result<u64, StoreError> {
        self.exec(
            "DELETE FROM switchyard_records WHERE log = $1 AND (at_ms, id) <= (
                    SELECT at_ms, id FROM switchyard_records WHERE log = $1
                    ORDER BY at_ms DESC, id DESC OFFSET $2 LIMIT 1
                 )",
            &[&log, &kept],
        )
        .await
    }

    /// `log`'s records, oldest first.
    pub async fn record_all(&self, log: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        self.json_column(
            "SELECT record FROM switchyard_records WHERE log = $1 ORDER BY at_ms, id",
            &[&log],
        )
        .await
    }
}

/// Writes one instance's cache analytics row.
const STATS_UPSERT: &str = "INSERT INTO switchyard_cache_stats (instance, updated_ms, snapshot)
    VALUES ($1, $2, $3)
    ON CONFLICT (instance) DO UPDATE SET updated_ms = EXCLUDED.updated_ms, snapshot = EXCLUDED.snapshot";

/// Cache analytics, one row per instance (see `cache::stats`).
impl Postgres {
    /// Writes an instance's figures.
    pub async fn cache_stats_put(
        &self,
        instance: &str,
        now_ms: i64,
        snapshot: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.exec(STATS_UPSERT, &[&instance, &now_ms, snapshot])
            .await?;
        Ok(())
    }

    /// Every row: `(instance, updated_ms, snapshot)`.
    pub async fn cache_stats_all(
        &self,
    ) -> Result<Vec<(String, i64, serde_json::Value)>, StoreError> {
        Ok(self
            .client()
            .await?
            .query(
                "SELECT instance, updated_ms, snapshot FROM switchyard_cache_stats",
                &[],
            )
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Starts folding rows: locks `archive`'s row and those not written since `before_ms`.
    pub async fn cache_stats_begin(
        &self,
        before_ms: i64,
        archive: &str,
    ) -> Result<(StatsFold, Vec<(String, serde_json::Value)>), StoreError> {
        let client = self.begin().await?;
        let rows = client
            .query(
                "SELECT instance, snapshot FROM switchyard_cache_stats
                 WHERE updated_ms < $1 OR instance = $2 FOR UPDATE",
                &[&before_ms, &archive],
            )
            .await
            .map_err(pg)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok((StatsFold { client }, rows))
    }
}

/// Rows of cache analytics being folded into one.
pub struct StatsFold {
    client: Client,
}

impl StatsFold {
    /// Writes the folded figures under `archive`, removes the folded rows, commits.
    pub async fn commit(
        self,
        archive: &str,
        now_ms: i64,
        snapshot: &serde_json::Value,
        folded: &[String],
    ) -> Result<(), StoreError> {
        self.client
            .execute(STATS_UPSERT, &[&archive, &now_ms, snapshot])
            .await
            .map_err(pg)?;
        self.client
            .execute(
                "DELETE FROM switchyard_cache_stats WHERE instance = ANY($1)",
                &[&folded],
            )
            .await
            .map_err(pg)?;
        self.client.batch_execute("COMMIT").await.map_err(pg)
    }
}

/// Governance entities (customers, teams, virtual keys) made through any instance's admin API;
/// the counters stay in Redis.
impl Postgres {
    /// Every entity as `(name, record as JSON text)` and the version they are at, read in one
    /// statement (one snapshot).
    pub async fn gov_load(&self) -> Result<(Vec<(String, String)>, i64), StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT (SELECT n FROM switchyard_gov_version),
                        COALESCE((SELECT jsonb_object_agg(name, record) FROM switchyard_gov_entities), '{}'::jsonb)",
                &[],
            )
            .await
            .map_err(pg)?;
        let all: serde_json::Value = row.get(1);
        let records = match all {
            serde_json::Value::Object(m) => {
                m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
            }
            _ => Vec::new(),
        };
        Ok((records, row.get(0)))
    }

    /// The version the entities are at (bumped by every change).
    pub async fn gov_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .client()
            .await?
            .query_one("SELECT n FROM switchyard_gov_version", &[])
            .await
            .map_err(pg)?
            .get(0))
    }

    /// Starts a change: a connection of its own in a transaction that holds the version row's
    /// lock (one change at a time across the fleet, each made on what the last one left), with
    /// the entities as they are now.
    pub async fn gov_begin(&self) -> Result<(GovChange, Vec<(String, String)>), StoreError> {
        let client = self.begin().await?;
        client
            .batch_execute("SELECT n FROM switchyard_gov_version FOR UPDATE")
            .await
            .map_err(pg)?;
        let rows = client
            .query(
                "SELECT name, record::text FROM switchyard_gov_entities",
                &[],
            )
            .await
            .map_err(pg)?;
        let records = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok((GovChange { client }, records))
    }
}

/// A governance change under way; dropped without [`GovChange::commit`], nothing is written
/// (the connection closes and the server rolls the transaction back).
pub struct GovChange {
    client: Client,
}

impl GovChange {
    /// Writes (`Some`) or removes (`None`) the named records, bumps the version, announces it
    /// and commits: the new version.
    pub async fn commit(self, writes: &[(String, Option<String>)]) -> Result<i64, StoreError> {
        for (name, rec) in writes {
            match rec {
                Some(json) => self
                    .client
                    .execute(
                        "INSERT INTO switchyard_gov_entities (name, record) VALUES ($1, $2::text::jsonb)
                         ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record",
                        &[name, json],
                    )
                    .await
                    .map_err(pg)?,
                None => self
                    .client
                    .execute("DELETE FROM switchyard_gov_entities WHERE name = $1", &[name])
                    .await
                    .map_err(pg)?,
            };
        }
        let n: i64 = self
            .client
            .query_one(
                "UPDATE switchyard_gov_version SET n = n + 1 RETURNING n",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        self.client
            .batch_execute("SELECT pg_notify('switchyard_config', 'gov'); COMMIT")
            .await
            .map_err(pg)?;
        Ok(n)
    }
}

fn decode(v: serde_json::Value) -> Result<Version, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Record {
        key: "switchyard_config_versions".into(),
        message: e.to_string(),
    })
}

fn number(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Postgres(format!("version {n} is out of range")))
}

impl VersionStore for Postgres {
    fn latest(&self) -> Fut<'_, Option<Version>> {
        Box::pin(async move {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT version FROM switchyard_config_versions ORDER BY n DESC LIMIT 1",
                    &[],
                )
                .await
                .map_err(pg)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }

    fn latest_number(&self) -> Fut<'_, u64> {
        Box::pin(async move {
            let row = self
                .client()
                .await?
                .query_one(
                    "SELECT COALESCE(MAX(n), 0) FROM switchyard_config_versions",
                    &[],
                )
                .await
                .map_err(pg)?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
    }

    fn append<'a>(&'a self, v: &'a Version) -> Fut<'a, bool> {
        Box::pin(async move {
            let body = serde_json::to_value(v).map_err(|e| StoreError::Record {
                key: format!("switchyard_config_versions/{}", v.n),
                message: e.to_string(),
            })?;
            // Inserted and announced in one statement: the notification goes out on commit.
            let rows = self
                .client()
                .await?
                .query(
                    "WITH ins AS (
                        INSERT INTO switchyard_config_versions (n, at, actor, action, version)
                        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (n) DO NOTHING RETURNING n
                    )
                    SELECT pg_notify('switchyard_config', n::text) FROM ins",
                    &[&number(v.n)?, &v.at, &v.actor, &v.action, &body],
                )
                .await
                .map_err(pg)?;
            Ok(!rows.is_empty())
        })
    }

    fn list(&self) -> Fut<'_, Vec<Version>> {
        Box::pin(async move {
            self.client()
                .await?
                .query(
                    "SELECT version FROM switchyard_config_versions ORDER BY n DESC",
                    &[],
                )
                .await
                .map_err(pg)?
                .into_iter()
                .map(|r| decode(r.get(0)))
                .collect()
        })
    }

    fn get(&self, n: u64) -> Fut<'_, Option<Version>> {
        Box::pin(async move {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT version FROM switchyard_config_versions WHERE n = $1",
                    &[&number(n)?],
                )
                .await
                .map_err(pg)?;
            row.map(|r| decode(r.get(0))).transpose()
        })
    }
}
