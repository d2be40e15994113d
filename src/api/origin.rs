//! Who may call the admin API, the web UI's calls and `/mcp` from a browser: the `Host` must be
//! one this gateway answers to (no DNS rebinding), a cross-origin `Origin` is refused unless
//! listed in `[server] cors_origins`, admin bodies must be `application/json` (no "simple"
//! cross-site form or text posts), and without an admin token only loopback peers may change
//! anything.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::config::Config;
use crate::error::GatewayError;

/// The `Host` names and origins this gateway accepts on its admin surfaces.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// `"*"` was configured: any `Host`.
    any: bool,
    /// Accepted host names, lower-case, without port or brackets.
    names: Vec<String>,
    /// Origins allowed to call from a browser (lower-case, no trailing slash).
    origins: Vec<String>,
}

impl HostPolicy {
    /// Loopback names, the listen address (when it is a specific one), `[server] allowed_hosts`
    /// and `[mcp] allowed_hosts`.
    pub fn new(cfg: &Config) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let ip = cfg.server.listen.ip();
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
        let extra = cfg
            .server
            .allowed_hosts
            .iter()
            .chain(&cfg.mcp.allowed_hosts);
        let mut any = false;
        for h in extra {
            if h == "*" {
                any = true;
            } else {
                names.push(bare_host(h).to_ascii_lowercase());
            }
        }
        Self {
            any,
            names,
            origins: cfg.server.cors_origins.clone(),
        }
    }

    /// Whether a `Host` header value (with or without port) is accepted.
    pub fn host_ok(&self, host: &str) -> bool {
        if self.any {
            return true;
        }
        let h = bare_host(host).to_ascii_lowercase();
        // `*.localhost` resolves to loopback by RFC 6761 and cannot be rebound.
        self.names.contains(&h) || h.ends_with(".localhost")
    }

    /// Every name `Host` may carry (for `/mcp`'s own check); empty when any is accepted.
    pub fn names(&self) -> Option<&[String]> {
        (!self.any).then_some(self.names.as_slice())
    }

    /// Whether a browser at `origin` may call, for a request to `host`.
    fn origin_ok(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.origins.contains(&origin) {
            return true;
        }
        // Same origin: the page was served by this gateway under the same host and port.
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
    }

    /// The configured CORS origins.
    pub fn cors_origins(&self) -> &[String] {
        &self.origins
    }
}

/// `host:port`, `[::1]:port`, `::1` -> the host alone.
fn bare_host(h: &str) -> &str {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    if h.matches(':').count() == 1 {
        return h.split(':').next().unwrap_or_default();
    }
    h
}

fn host_of(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// Checks `Host` and `Origin` (`/api`, `/mcp`); the error says what to configure.
pub fn check_browser(policy: &HostPolicy, req: &Request) -> Result<(), GatewayError> {
    let host = host_of(req);
    if let Some(h) = host
        && !policy.host_ok(h)
    {
        return Err(GatewayError::Forbidden {
            code: "host_not_allowed",
            message: format!(
                "Host `{}` is not allowed here: add it to [server] allowed_hosts (this guards against DNS rebinding)",
                h.chars().take(100).collect::<String>()
            ),
        });
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    if let Some(o) = origin
        && !policy.origin_ok(o, host)
    {
        return Err(GatewayError::Forbidden {
            code: "cross_origin_forbidden",
            message: format!(
                "requests from origin `{}` are not allowed: add it to [server] cors_origins to let a web page at that origin call this gateway",
                o.chars().take(100).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// Whether a request's body is declared as JSON (`application/json`, any parameters).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .is_some_and(|v| v.eq_ignore_ascii_case("application/json"))
}

fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn peer_is_loopback(req: &Request) -> bool {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(a)| is_loopback(a.ip()))
}

/// Loopback, IPv4-mapped IPv6 included.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `/api/*`: browser checks, then JSON bodies only, then the admin token (or, without one,
/// loopback peers only for anything that changes state).
pub async fn protect_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = admin_allowed(&state, &req) {
        return super::json_error(e);
    }
    next.run(req).await
}

fn admin_allowed(state: &AppState, req: &Request) -> Result<(), GatewayError> {
    check_browser(&state.hosts, req)?;
    let changes = changes_state(req.method());
    if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && !is_json(req.headers())
    {
        return Err(GatewayError::UnsupportedMediaType(
            "the admin API accepts only `Content-Type: application/json` bodies".into(),
        ));
    }
    if state.config.server.admin_token.is_some() {
        if !super::admin::token_ok(state, req.headers()) {
            return Err(GatewayError::Unauthorized(
                "admin API: send `Authorization: Bearer <admin_token>`".into(),
            ));
        }
        return Ok(());
    }
    if changes && !peer_is_loopback(req) {
        return Err(GatewayError::Forbidden {
            code: "admin_token_required",
            message: "without an admin token, the admin API accepts changes only from this machine (loopback): set [server] admin_token".into(),
        });
    }
    Ok(())
}

/// `/mcp`: the browser checks, then a valid virtual key (required with `require_virtual_key`),
/// or the admin token when one is set.
pub async fn protect_mcp(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = check_browser(&state.hosts, &req) {
        return super::mcp_rpc::rpc_error_response(&e, None);
    }
    let cred = crate::governance::credential(req.headers());
    let admin =
        state.config.server.admin_token.is_some() && super::admin::token_ok(&state, req.headers());
    if !admin {
        match state.governance.identify_caller(cred.as_deref()) {
            Ok(Some(_)) => {}
            Ok(None) if state.config.server.admin_token.is_some() => {
                let e = GatewayError::Unauthorized(
                    "send a virtual key or `Authorization: Bearer <admin_token>`".into(),
                );
                return super::mcp_rpc::rpc_error_response(&e, None);
            }
            Ok(None) => {}
            Err(e) => {
                return super::mcp_rpc::rpc_error_response(&GatewayError::Governance(e), None);
            }
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(listen: &str, extra: &[&str]) -> HostPolicy {
        let mut cfg = Config::zero_config(&|_| None);
        cfg.server.listen = listen.parse().unwrap();
        cfg.server.allowed_hosts = extra.iter().map(|s| (*s).to_owned()).collect();
        HostPolicy::new(&cfg)
    }

    #[test]
    fn hosts() {
        let p = policy("127.0.0.1:8080", &["gw.internal"]);
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8080",
            "gw.internal:443",
            "app.localhost",
        ] {
            assert!(p.host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!p.host_ok(bad), "{bad}");
        }
        assert!(policy("10.1.2.3:80", &[]).host_ok("10.1.2.3"));
        assert!(!policy("0.0.0.0:80", &[]).host_ok("0.0.0.0"));
        assert!(policy("0.0.0.0:80", &["*"]).host_ok("anything"));
    }

    #[test]
    fn origins() {
        let mut p = policy("127.0.0.1:8080", &[]);
        assert!(p.origin_ok("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(!p.origin_ok("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!p.origin_ok("null", Some("127.0.0.1:8080")));
        p.origins = vec!["https://admin.example".into()];
        assert!(p.origin_ok("https://admin.example/", Some("127.0.0.1:8080")));
    }
}
