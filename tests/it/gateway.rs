//! Starts the real gateway in-process on 127.0.0.1:0 and talks to it over HTTP.

use std::net::SocketAddr;

use serde_json::Value;
use switchyard::app::Server;
use switchyard::config::Config;

/// A running gateway.
pub struct Gateway {
    /// Bound address.
    pub addr: SocketAddr,
    /// HTTP client.
    pub http: reqwest::Client,
    server: Option<Server>,
    /// The data directory, when the test did not choose one.
    _data: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts a gateway from TOML config text (no `listen` needed: port 0 is used).
    pub async fn start(toml: &str) -> Self {
        Self::start_env(toml, &|k| std::env::var(k).ok()).await
    }

    /// Starts a gateway from TOML config text, resolving `env.NAME` through `env`.
    /// The semantic cache stays off unless the config has a `[cache]` section, so tests that
    /// repeat a request see every call reach the mock provider.
    pub async fn start_env(toml: &str, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut cfg = Config::parse(toml, env).unwrap_or_else(|e| panic!("bad test config: {e:?}"));
        if !toml.contains("[cache]") {
            cfg.cache.enabled = false;
        }
        Self::with_config(cfg).await
    }

    /// Starts a gateway from a config (data in a fresh temporary directory unless the config
    /// names one).
    pub async fn with_config(mut cfg: Config) -> Self {
        let mut data = None;
        if cfg.server.data_dir == std::path::Path::new("./data") {
            let dir = tempfile::tempdir().unwrap();
            cfg.server.data_dir = dir.path().to_owned();
            data = Some(dir);
        }
        let server = Server::start(cfg, Some("127.0.0.1:0".parse().unwrap()))
            .await
            .unwrap();
        Self {
            addr: server.addr,
            http: client(),
            server: Some(server),
            _data: data,
        }
    }

    /// Waits until `/ready` says ready (cache store and embedding model loaded).
    pub async fn wait_ready(&self) {
        for _ in 0..600 {
            let r = self.get("/ready", None).await;
            if r.status().as_u16() == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("gateway not ready after 12 s");
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST JSON to /v1/chat/completions and return the status, headers and JSON body.
    pub async fn chat(&self, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let r = self.post("/v1/chat/completions", body).await;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let json = r.json().await.unwrap_or(Value::Null);
        (status, headers, json)
    }

    /// GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut rb = self.http.get(self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb.send().await.unwrap()
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.http.delete(self.url(path)).send().await.unwrap()
    }

    /// DELETE and return the JSON answer.
    pub async fn delete_json(&self, path: &str) -> Value {
        self.delete(path).await.json().await.unwrap()
    }

    /// Stops the server, draining in-flight requests.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// An HTTP client for tests (the TLS crypto provider is chosen by the gateway; install it first).
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A header as a string.
pub fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub struct Event {
    /// `event:` name.
    pub event: Option<String>,
    /// `data:` payload.
    pub data: String,
}

/// Reads a whole SSE response into events (comments skipped).
pub async fn sse(resp: reqwest::Response) -> Vec<Event> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.trim_start().to_owned());
                }
            }
            (!data.is_empty()).then(|| Event {
                event,
                data: data.join("\n"),
            })
        })
        .collect()
}

/// A folded stream: text, tool calls as (name, arguments), finish reason, usage.
pub type Folded = (String, Vec<(String, Value)>, Option<String>, Option<Value>);

/// Folds OpenAI stream events into (text, tool calls as (name, args JSON), finish reason, usage).
pub fn fold_openai(events: &[Event]) -> Folded {
    let mut text = String::new();
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut finish = None;
    let mut usage = None;
    for e in events {
        if e.data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        assert!(v.get("error").is_none(), "unexpected error event: {v}");
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            usage = Some(u.clone());
        }
        for c in v["choices"].as_array().unwrap() {
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            for tc in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                while calls.len() <= i {
                    calls.push(Default::default());
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    calls[i].0.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    calls[i].1.push_str(a);
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
    }
    let calls = calls
        .into_iter()
        .map(|(n, a)| (n, serde_json::from_str(&a).unwrap()))
        .collect();
    (text, calls, finish, usage)
}

/// The real `switchyard` binary, started with a config file and stopped when dropped.
pub struct Binary {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    _dir: tempfile::TempDir,
}

/// `GET url` and its JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sends a one-line chat for `model` to the gateway at `url`: the status and the provider that
/// answered (`x-switchyard-provider`).
pub async fn served_by(url: &str, model: &str) -> (u16, String) {
    let r = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let p = header(r.headers(), "x-switchyard-provider");
    (r.status().as_u16(), p)
}

impl Binary {
    /// Writes `config` (without `[server]`) plus a free loopback port, starts `switchyard serve`
    /// and waits for `/ready`.
    pub async fn start(config: &str) -> Self {
        Self::launch(config, false).await
    }

    /// The same, with more `[server]` fields and environment variables.
    pub async fn start_with(config: &str, server: &str, env: &[(&str, &str)]) -> Self {
        Self::launch_with(config, server, env, true).await
    }

    /// The same, with the process's log (stderr, at warn) kept for [`Binary::logs`].
    pub async fn start_logged(config: &str) -> Self {
        Self::launch(config, true).await
    }

    /// What the process logged so far (with [`Binary::start_logged`]).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn launch(config: &str, capture: bool) -> Self {
        Self::launch_with(config, "", &[], capture).await
    }

    async fn launch_with(config: &str, server: &str, env: &[(&str, &str)], capture: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = dir.path().join("switchyard.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n{server}\n\n{config}{}",
                dir.path().join("data"),
                if config.contains("[cache]") {
                    ""
                } else {
                    "\n[cache]\nenabled = false\n"
                }
            ),
        )
        .unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--config"])
            .arg(&path)
            .env("SWITCHYARD_LOG", "warn")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        if capture {
            let f = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
            cmd.stderr(f);
        }
        let child = cmd.spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let http = client();
        for _ in 0..400 {
            let ready = http.get(format!("{url}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Self {
                    child,
                    url,
                    _dir: dir,
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the gateway binary did not start");
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// Sends a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([format!("-{name}"), pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// The config file it was started from.
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("switchyard.toml")
    }

    /// Stops the process (SIGTERM) and starts it again from the same config file and data
    /// directory, on the same port.
    pub async fn restart(mut self) -> Self {
        self.terminate();
        self.wait().await;
        let port = self.url.rsplit(':').next().unwrap().to_owned();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--config"])
            .arg(self.config_path())
            .env("SWITCHYARD_LOG", "warn")
            .kill_on_drop(true);
        self.child = cmd.spawn().unwrap();
        let http = client();
        for _ in 0..400 {
            let ready = http.get(format!("{}/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return self;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the gateway binary did not start again on port {port}");
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.unwrap()
    }
}
