//! A fleet on one real Postgres (`[server] state = "postgres"`): three gateway processes share the
//! runtime configuration; a change through any of them reaches the others within a second
//! (NOTIFY, with polling as the safety net); a rollback reaches all; secrets stay sealed in the
//! database; a database that cannot be reached stops the start with a clear error.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::{Binary, client, get_json, served_by};
use crate::mock::Mock;
use crate::postgres_server::PostgresServer;

const KEY: &str = "6b0d3c2e8f1a4b5c6d7e8f90112233445566778899aabbccddeeff0011223344";
const SECRET: &str = "sk-fleet-shared-secret-0123456789";

/// A Postgres with a database, a mock provider, and the config every instance starts from.
struct Fleet {
    pg: PostgresServer,
    db: String,
    mock: Mock,
}

impl Fleet {
    async fn start(name: &str) -> Option<Self> {
        let pg = PostgresServer::start()?;
        let db = pg.database(name).await;
        Some(Self {
            pg,
            db,
            mock: Mock::start().await,
        })
    }

    /// One more gateway process on the shared state (a config file with provider `a`).
    async fn instance(&self) -> Binary {
        self.instance_with("").await
    }

    /// The same, with `extra` at the top of its config file.
    async fn instance_with(&self, extra: &str) -> Binary {
        let file = format!(
            "{extra}[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"ka\"]\n",
            self.mock.url()
        );
        let server = format!("state = \"postgres\"\npostgres_url = \"{}\"", self.db);
        Binary::start_with(&file, &server, &[("SWITCHYARD_SECRET_KEY", KEY)]).await
    }
}

async fn post(url: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Polls `probe` every 20 ms until it says yes; how long it took. Fails after `limit`, with
/// what the last probe saw.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
    done: impl Fn(&T) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let got = probe().await;
        if done(&got) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: still {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `model` on `url` is served as `want` says; how long it took.
async fn until(url: &str, model: &str, want: impl Fn(&(u16, String)) -> bool) -> Duration {
    let what = format!("{url} {model}");
    eventually(
        Duration::from_secs(5),
        &what,
        || served_by(url, model),
        want,
    )
    .await
}

#[tokio::test]
async fn a_change_through_any_instance_reaches_the_whole_fleet_within_a_second() {
    let Some(f) = Fleet::start("fleet").await else {
        return;
    };
    let (mock, db) = (&f.mock, &f.db);
    let a = f.instance().await;
    let b = f.instance().await;
    let c = f.instance().await;

    // A provider added through A answers through B and C.
    let (status, v) = post(
        &a.url,
        "/api/providers",
        json!({"name": "p2", "kind": "openai", "base_url": format!("{}/v1", mock.url()), "keys": [SECRET]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let mut lags = Vec::new();
    for x in [&b, &c] {
        lags.push(until(&x.url, "p2/gpt-4o-mini", |g| g == &(200, "p2".into())).await);
    }
    assert_eq!(mock.last().key().as_deref(), Some(SECRET));

    // A route made through B reaches C.
    let (status, v) = post(
        &b.url,
        "/api/routes",
        json!({"model": "smart", "targets": [{"model": "p2/gpt-4o-mini"}]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    lags.push(until(&c.url, "smart", |g| g == &(200, "p2".into())).await);
    lags.push(until(&a.url, "smart", |g| g == &(200, "p2".into())).await);

    // A rollback through C (to version 1: the provider, no route) reaches all three.
    let (status, v) = post(&c.url, "/api/config/rollback/1", json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["version"], 3, "{v}");
    for x in [&a, &b, &c] {
        lags.push(until(&x.url, "smart", |g| g.1 != "p2").await);
    }
    println!("fleet propagation lags: {lags:?}");
    for lag in &lags {
        assert!(
            *lag < Duration::from_secs(1),
            "a change took {lag:?}: {lags:?}"
        );
    }

    // Every instance lists the fleet's versions.
    let v: Value = get_json(&format!("{}/api/config/versions", b.url)).await;
    assert_eq!(v["current"], 3, "{v}");
    assert_eq!(v["data"][0]["action"], "rollback to 1", "{v}");

    // The database holds the secret sealed only.
    let (db_client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let rows = db_client
        .query("SELECT version::text FROM switchyard_config_versions", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        let text: String = r.get(0);
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("sealed:v1:"), "{text}");
    }
    drop(db_client);
    let _ = driver.await;

    // Every instance's log shows the whole fleet's traffic.
    let mut ids = Vec::new();
    for (i, x) in [&a, &b, &c].iter().enumerate() {
        for j in 0..2 {
            let id = format!("fleet-req-{i}-{j}");
            let r = client()
                .post(format!("{}/v1/chat/completions", x.url))
                .header("x-request-id", &id)
                .json(&json!({"model": "p2/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            ids.push(id);
        }
    }
    let logs = format!("{}/api/logs?limit=500", a.url);
    let every = |page: &Value| {
        let seen: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["request_id"].as_str())
            .collect();
        ids.iter().all(|id| seen.contains(&id.as_str()))
    };
    eventually(Duration::from_secs(5), "A's log", || get_json(&logs), every).await;
    let one: Value = get_json(&format!("{}/api/logs/fleet-req-2-1", a.url)).await;
    assert_eq!(one["model"], "p2/gpt-4o-mini", "{one}");
    let usage: Value = get_json(&format!("{}/api/usage?model=p2/gpt-4o-mini", b.url)).await;
    assert!(usage["total"]["requests"].as_u64().unwrap() >= 6, "{usage}");
    // Pages follow one another without gaps or repeats.
    let first: Value = get_json(&format!("{}/api/logs?limit=4", c.url)).await;
    let cursor = first["next_cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no cursor: {first}"))
        .to_owned();
    let second: Value = get_json(&format!("{}/api/logs?limit=4&cursor={cursor}", c.url)).await;
    let page_ids = |p: &Value| -> Vec<String> {
        p["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (p1, p2) = (page_ids(&first), page_ids(&second));
    assert_eq!(p1.len(), 4);
    assert!(p1.iter().all(|id| !p2.contains(id)), "{p1:?} {p2:?}");

    // A new instance starts with the fleet's configuration.
    let d = f.instance().await;
    assert_eq!(
        served_by(&d.url, "p2/gpt-4o-mini").await,
        (200, "p2".into())
    );
}

#[tokio::test]
async fn the_version_store_suite_passes_on_postgres() {
    let Some(pg) = PostgresServer::start() else {
        return;
    };
    let db = pg.database("suite").await;
    let store = switchyard::store::postgres::Postgres::connect(&db)
        .await
        .unwrap();
    switchyard::store::versions::suite::numbers_are_taken_once_and_listed_newest_first(&store)
        .await;
    // Migrations run once: a second instance connecting finds the schema in place.
    switchyard::store::postgres::Postgres::connect(&db)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_response_store_suite_passes_on_postgres() {
    use switchyard::store::responses::{ResponseStore, suite};
    let Some(pg) = PostgresServer::start() else {
        return;
    };
    let db = pg.database("responses").await;
    let store = |db: String| async move {
        let pg = switchyard::store::postgres::Postgres::connect(&db)
            .await
            .unwrap();
        // Each check on an empty table.
        ResponseStore::shared(std::sync::Arc::new(pg), Duration::from_secs(60), 3)
    };
    suite::a_chain_of_turns_is_one_conversation_for_its_tenant_only(&store(db).await).await;
    suite::the_oldest_go_first_beyond_max_stored(&store(pg.database("responses2").await).await)
        .await;
    suite::an_expired_response_is_not_found(&store(pg.database("responses3").await).await).await;
}

#[tokio::test]
async fn a_conversation_stored_through_one_instance_continues_through_another() {
    let Some(f) = Fleet::start("responses").await else {
        return;
    };
    let (a, b) = (f.instance().await, f.instance().await);
    // Stream and not: the last bytes go out only once the turn is written.
    let (s, first) = post(
        &a.url,
        "/v1/responses",
        json!({"model": "a/gpt-4o-mini", "input": "Remember the number 7."}),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    let text = client()
        .post(format!("{}/v1/responses", b.url))
        .json(&json!({"model": "a/gpt-4o-mini", "input": "Which number?", "previous_response_id": first["id"], "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("response.completed"), "{text}");
    let second = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "response.completed")
        .unwrap();
    let sid = second["response"]["id"].as_str().unwrap().to_owned();
    // The mock saw the whole conversation through B.
    let seen = f.mock.last().body.to_string();
    assert!(seen.contains("Remember the number 7."), "{seen}");
    // At once, through A again, continuing B's turn: both earlier turns.
    let (s, third) = post(
        &a.url,
        "/v1/responses",
        json!({"model": "a/gpt-4o-mini", "input": "And again?", "previous_response_id": sid}),
    )
    .await;
    assert_eq!(s, 200, "{third}");
    let seen = f.mock.last().body.to_string();
    assert!(
        seen.contains("Remember the number 7.") && seen.contains("Which number?"),
        "{seen}"
    );
    // Read and deleted through either.
    let got = get_json(&format!("{}/v1/responses/{sid}", a.url)).await;
    assert_eq!(got["id"], sid);
    let r = client()
        .delete(format!("{}/v1/responses/{sid}", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(format!("{}/v1/responses/{sid}", b.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Runs `switchyard serve` on a config and returns its exit status and what it printed.
async fn serve_fails(server: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = {:?}\n{server}\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_remove("SWITCHYARD_SECRET_KEY")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the gateway should exit, not wait")
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_unreachable_database_or_a_missing_shared_key_stops_the_start_clearly() {
    let (ok, err) = serve_fails(
        "state = \"postgres\"\npostgres_url = \"postgresql://switchyard@/x?host=/nonexistent-dir\"",
        &[("SWITCHYARD_SECRET_KEY", KEY)],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("cannot use the Postgres state"), "{err}");
    let Some(pg) = PostgresServer::start() else {
        return;
    };
    let db = pg.database("nokey").await;
    let (ok, err) = serve_fails(
        &format!("state = \"postgres\"\npostgres_url = \"{db}\""),
        &[],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("SWITCHYARD_SECRET_KEY"), "{err}");
}

#[tokio::test]
async fn while_postgres_is_down_chat_keeps_working_and_the_instance_catches_up() {
    let Some(f) = Fleet::start("down").await else {
        return;
    };
    let (mock, pg) = (&f.mock, &f.pg);
    let a = f.instance().await;
    let (status, v) = post(
        &a.url,
        "/api/providers",
        json!({"name": "p2", "kind": "openai", "base_url": format!("{}/v1", mock.url()), "keys": ["kp2"]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let ready = |url: String| async move {
        client()
            .get(format!("{url}/ready"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let r = ready(a.url.clone()).await;
    assert_eq!(
        r["backing"]["state"],
        json!({"backend": "postgres", "up": true}),
        "{r}"
    );

    pg.stop();
    // The configuration in service keeps serving; the log holds its records; changes wait.
    for i in 0..3 {
        let r = client()
            .post(format!("{}/v1/chat/completions", a.url))
            .header("x-request-id", format!("while-down-{i}"))
            .json(&json!({"model": "p2/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let r = ready(a.url.clone()).await;
    assert_eq!(r["status"], "ready", "{r}");
    assert_eq!(r["backing"]["state"]["up"], false, "{r}");
    let status = get_json(&format!("{}/api/status", a.url)).await;
    assert_eq!(status["backing"]["state"]["up"], false, "{status}");
    assert_eq!(status["providers"], 2, "{status}");
    assert_eq!(status["config_version"], 1, "{status}");
    let (status, v) = post(
        &a.url,
        "/api/providers",
        json!({"name": "p3", "kind": "ollama"}),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");

    // Back up: changes work again and the held records arrive.
    pg.restart();
    let add = || {
        post(
            &a.url,
            "/api/providers",
            json!({"name": "p3", "kind": "ollama"}),
        )
    };
    let what = "a change once postgres is back";
    eventually(Duration::from_secs(10), what, add, |(s, _)| *s == 201).await;
    let held = format!("{}/api/logs/while-down-2", a.url);
    let status = || async { client().get(&held).send().await.unwrap().status().as_u16() };
    let what = "the held records arrive";
    eventually(Duration::from_secs(10), what, status, |s| *s == 200).await;

    // A graceful stop ends promptly and writes the last records first.
    let r = client()
        .post(format!("{}/v1/chat/completions", a.url))
        .header("x-request-id", "the-last-one")
        .json(&json!({"model": "p2/gpt-4o-mini", "messages": [{"role": "user", "content": "bye"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut a = a;
    a.terminate();
    let status = tokio::time::timeout(Duration::from_secs(10), a.wait())
        .await
        .expect("a graceful stop with Postgres ends");
    assert!(status.success(), "{status:?}");
    let (db_client, conn) = tokio_postgres::connect(&f.db, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let n: i64 = db_client
        .query_one(
            "SELECT count(*) FROM switchyard_request_log WHERE request_id = 'the-last-one'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "{}", a.logs());
    drop(db_client);
    let _ = driver.await;
}

#[tokio::test]
async fn governance_limits_hold_across_the_fleet() {
    let Some(f) = Fleet::start("limits").await else {
        return;
    };
    let Some(redis) = crate::redis_server::RedisServer::start() else {
        return;
    };
    let key = "sk-sy-fleet-limit-0123456789abcdef";
    let gov = format!(
        "[governance]\nrequire_virtual_key = true\nstore = \"redis\"\nredis_url = \"{}\"\n\n\
         [[governance.keys]]\nid = \"k\"\nvalue = \"{key}\"\nrate_limits = {{ requests_per_minute = 7 }}\n\n",
        redis.url
    );
    let fleet = [
        f.instance_with(&gov).await,
        f.instance_with(&gov).await,
        f.instance_with(&gov).await,
    ];
    // 7 requests a minute for the key, whichever instances they reach: 21 sent, 7 served.
    crate::governance::clear_of_minute_boundary().await;
    let mut sent = Vec::new();
    for i in 0..21 {
        let url = fleet[i % 3].url.clone();
        sent.push(async move { chat_as(&url, key).await });
    }
    let statuses = futures_util::future::join_all(sent).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((served, limited), (7, 14), "{statuses:?}");
}

#[tokio::test]
async fn an_mcp_server_registered_through_one_instance_serves_on_all() {
    let Some(f) = Fleet::start("mcp").await else {
        return;
    };
    let file = format!(
        "[[providers]]\nname = \"a\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nkeys = [\"ka\"]\n",
        f.mock.url()
    );
    // Registering a stdio server needs the admin token.
    let server = format!(
        "state = \"postgres\"\npostgres_url = \"{}\"\nadmin_token = \"fleet-admin\"",
        f.db
    );
    let env = [("SWITCHYARD_SECRET_KEY", KEY)];
    let a = Binary::start_with(&file, &server, &env).await;
    let b = Binary::start_with(&file, &server, &env).await;
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth("fleet-admin");
    let r = admin(client().post(format!("{}/api/mcp/servers", a.url)))
        .json(&json!({"name": "calc", "transport": "stdio", "command": crate::mcp::server_bin("mcp-calculator")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    // B starts it and runs its tools.
    let call = || async {
        let r = admin(client().post(format!("{}/api/mcp/tools/calc__add/call", b.url)))
            .json(&json!({"a": 2, "b": 3}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap_or(Value::Null)
    };
    let ran = |v: &Value| v["outcome"] == "ok";
    eventually(Duration::from_secs(10), "B runs calc__add", call, ran).await;
    let v = call().await;
    assert_eq!(v["text"], "5", "{v}");
    // The same name again, through B: taken.
    let r = admin(client().post(format!("{}/api/mcp/servers", b.url)))
        .json(&json!({"name": "calc", "transport": "stdio", "command": crate::mcp::server_bin("mcp-calculator")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    // Removed through B: gone from A.
    let r = admin(client().delete(format!("{}/api/mcp/servers/calc", b.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let servers = || async {
        let r = admin(client().get(format!("{}/api/mcp/servers", a.url)));
        r.send().await.unwrap().json::<Value>().await.unwrap()
    };
    let gone = |v: &Value| v["data"].as_array().is_some_and(Vec::is_empty);
    eventually(Duration::from_secs(2), "A drops calc", servers, gone).await;
}

async fn chat_as(url: &str, key: &str) -> u16 {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "a/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn virtual_keys_live_in_postgres_and_their_counters_in_redis() {
    let Some(f) = Fleet::start("govdefs").await else {
        return;
    };
    let Some(redis) = crate::redis_server::RedisServer::start() else {
        return;
    };
    let gov = format!(
        "[governance]\nrequire_virtual_key = true\nstore = \"redis\"\nredis_url = \"{}\"\n\n",
        redis.url
    );
    let fleet = [
        f.instance_with(&gov).await,
        f.instance_with(&gov).await,
        f.instance_with(&gov).await,
    ];
    // A team and a key made through A, limited to 5 requests a minute (counted in calendar
    // minutes: the probes and the six requests below must fall in one).
    crate::governance::clear_of_minute_boundary().await;
    let (s, t) = post(&fleet[0].url, "/api/teams", json!({"id": "ml"})).await;
    assert_eq!(s, 201, "{t}");
    let (s, k) = post(
        &fleet[0].url,
        "/api/keys",
        json!({"id": "fleet-key", "team": "ml", "rate_limits": {"requests_per_minute": 5}}),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let secret = k["secret"].as_str().unwrap().to_owned();
    // Known to B and C within a second (NOTIFY; polling as the safety net).
    for b in &fleet[1..] {
        let what = format!("{} knows the key", b.url);
        let probe = || chat_as(&b.url, &secret);
        eventually(Duration::from_secs(1), &what, probe, |s| *s != 401).await;
    }
    // Two requests served above; 5 a minute across the fleet: 3 more, then refused everywhere.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(chat_as(&fleet[i % 3].url, &secret).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    // The definitions are rows in Postgres (the secret only as its hash); Redis holds counters,
    // not the entities.
    let (db_client, conn) = tokio_postgres::connect(&f.db, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    let rows = db_client
        .query(
            "SELECT name, record::text FROM switchyard_gov_entities ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for r in &rows {
        let text: String = r.get(1);
        assert!(!text.contains(&secret), "a secret in postgres: {text}");
    }
    assert!(
        rows.iter()
            .any(|r| r.get::<_, String>(1).contains("fleet-key"))
    );
    let mut rc = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let held: bool = redis::cmd("EXISTS")
        .arg("sy:gov:entities")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(!held, "entities written to redis as well");
    // Disabled through C: refused by A within a second.
    let r = client()
        .patch(format!("{}/api/keys/fleet-key", fleet[2].url))
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let what = "A refuses a key disabled through C";
    let probe = || chat_as(&fleet[0].url, &secret);
    eventually(Duration::from_secs(1), what, probe, |s| *s == 403).await;
    // A restart of every instance keeps the key (read back from Postgres).
    drop(fleet);
    let again = f.instance_with(&gov).await;
    let keys = get_json(&format!("{}/api/keys", again.url)).await;
    assert!(keys.to_string().contains("fleet-key"), "{keys}");
    drop(db_client);
    let _ = driver.await;
}

#[tokio::test]
async fn cache_analytics_add_up_across_the_fleet() {
    let Some(f) = Fleet::start("cachestats").await else {
        return;
    };
    let exact = "[cache]\nmode = \"exact\"\n\n";
    let (a, b) = (f.instance_with(exact).await, f.instance_with(exact).await);
    let ask = |url: String, q: &'static str| async move {
        let r = client()
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "a/gpt-4o-mini", "messages": [{"role": "user", "content": q}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-switchyard-cache"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    // Each instance's embedded cache: A misses then hits, B misses twice on other questions.
    assert_eq!(ask(a.url.clone(), "one").await, "miss");
    assert_eq!(ask(a.url.clone(), "one").await, "hit-exact");
    assert_eq!(ask(b.url.clone(), "two").await, "miss");
    assert_eq!(ask(b.url.clone(), "three").await, "miss");
    // Both instances' stats show the whole fleet once each has written its figures (every 5 s).
    for url in [&a.url, &b.url] {
        let stats = format!("{url}/api/cache/stats");
        let what = format!("{url} shows the fleet's figures");
        let probe = || get_json(&stats);
        let fleet = |st: &Value| {
            st["lookups"]["miss"] == 3
                && st["lookups"]["hit-exact"] == 1
                && st["by_route"]["a/gpt-4o-mini"]["lookups"]["miss"] == 3
        };
        eventually(Duration::from_secs(12), &what, probe, fleet).await;
    }
}

#[tokio::test]
async fn a_wrong_answer_reported_through_one_instance_is_kept_for_the_whole_fleet() {
    let Some(f) = Fleet::start("feedback").await else {
        return;
    };
    let exact = "[cache]\nmode = \"exact\"\n\n";
    let (a, b) = (f.instance_with(exact).await, f.instance_with(exact).await);
    assert_eq!(served_by(&a.url, "a/gpt-4o-mini").await.0, 200);
    let entries = format!("{}/api/cache/entries", a.url);
    let what = "the answer is cached on A";
    let probe = || get_json(&entries);
    eventually(Duration::from_secs(5), what, probe, |p| p["total"] == 1).await;
    let page = get_json(&entries).await;
    let id = page["entries"][0]["id"].as_str().unwrap().to_owned();
    let (s, v) = post(
        &a.url,
        &format!("/api/cache/entries/{id}/feedback"),
        json!({"verdict": "wrong"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // B lists the report made through A.
    let reported = format!("{}/api/cache/feedback", b.url);
    let what = "B lists the report made through A";
    let probe = || get_json(&reported);
    let listed = |v: &Value| v.to_string().contains(&id);
    eventually(Duration::from_secs(5), what, probe, listed).await;
}

#[tokio::test]
async fn the_rows_of_instances_gone_are_folded_into_one_and_nothing_is_lost() {
    use switchyard::cache::stats::{Outcome, Stats};
    let Some(pg) = PostgresServer::start() else {
        return;
    };
    let db = pg.database("fold").await;
    let pg = std::sync::Arc::new(
        switchyard::store::postgres::Postgres::connect(&db)
            .await
            .unwrap(),
    );
    // Two instances that wrote their figures, then went away; one alive.
    for _ in 0..2 {
        let gone = Stats::shared(pg.clone());
        gone.lookup("r", Outcome::Miss);
        gone.persist().await.unwrap();
    }
    let (db_client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    db_client
        .execute("UPDATE switchyard_cache_stats SET updated_ms = 0", &[])
        .await
        .unwrap();
    let alive = Stats::shared(pg.clone());
    alive.lookup("r", Outcome::HitExact);
    alive.persist().await.unwrap();
    alive.compact().await.unwrap();
    let names: Vec<String> = db_client
        .query(
            "SELECT instance FROM switchyard_cache_stats ORDER BY instance = 'archive' DESC",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "archive");
    let all = alive.fleet().await;
    assert_eq!((all.total.miss, all.total.hit_exact), (2, 1));
    // Folding again (the archive is old too) changes nothing.
    alive.compact().await.unwrap();
    let all = alive.fleet().await;
    assert_eq!((all.total.miss, all.total.hit_exact), (2, 1));
    drop(db_client);
    let _ = driver.await;
}
