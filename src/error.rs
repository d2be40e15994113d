//! The edge error: every module error becomes an HTTP status and an OpenAI-shaped JSON body.

use axum::http::StatusCode;
use serde_json::json;

use crate::governance::GovernanceError;
use crate::mcp::McpError;
use crate::providers::ProviderError;
use crate::request::Served;
use crate::router::RouterError;

/// Errors answered at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The body is not valid JSON or has a wrong field.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `max_body_bytes`.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// Missing or wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// Refused by policy (host, origin, loopback-only, a disabled feature); `code` says which.
    #[error("{message}")]
    Forbidden {
        /// `error.code`.
        code: &'static str,
        /// What was refused and what to configure.
        message: String,
    },
    /// The body's `Content-Type` is not one the endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Any other status: axum's own rejections (wrong method, undecodable path or query) and
    /// the few answers that need a status of their own (409 for a disabled feature).
    #[error("{message}")]
    Http {
        /// The status.
        status: StatusCode,
        /// `error.code`.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// An admin resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A part of the gateway is not available (e.g. the cache store failed to open).
    #[error("{0}")]
    Unavailable(String),
    /// The router failed.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// An MCP admin operation failed.
    #[error(transparent)]
    Mcp(#[from] McpError),
    /// Governance refused the request or an admin change.
    #[error(transparent)]
    Governance(#[from] GovernanceError),
    /// A plugin refused the request, or a `fail_closed` plugin failed.
    #[error(transparent)]
    Plugin(#[from] crate::plugins::PluginStop),
}

impl GatewayError {
    /// HTTP status, OpenAI error `type` and `code`.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            Self::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
            ),
            Self::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "unauthorized",
            ),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, "permission_error", code),
            Self::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                "unsupported_media_type",
            ),
            Self::Http { status, code, .. } => (
                *status,
                if status.is_server_error() {
                    "server_error"
                } else {
                    "invalid_request_error"
                },
                code,
            ),
            Self::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "unavailable",
            ),
            Self::Router(e) => router_parts(e),
            Self::Governance(e) => governance_parts(e),
            Self::Plugin(crate::plugins::PluginStop::Rejected { status, .. }) => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                if *status >= 500 {
                    "server_error"
                } else {
                    "invalid_request_error"
                },
                "plugin_rejected",
            ),
            Self::Plugin(crate::plugins::PluginStop::Failed { .. }) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "plugin_failed",
            ),
            Self::Mcp(e) => match e {
                McpError::Invalid(_) | McpError::Connect { .. } => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_mcp_server",
                ),
                McpError::Conflict(_) => {
                    (StatusCode::CONFLICT, "invalid_request_error", "conflict")
                }
                McpError::NotFound(_) => {
                    (StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
                }
                McpError::Store(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "store_error",
                ),
            },
        }
    }

    /// Who was tried, when the router got that far.
    pub fn served(&self) -> Option<&Served> {
        match self {
            Self::Router(e) => e.served(),
            _ => None,
        }
    }

    /// Upstream attempts made before this error.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Router(RouterError::Upstream { served, .. }) => served.attempts,
            Self::Router(RouterError::Deadline { attempts }) => *attempts,
            _ => 0,
        }
    }

    /// Retry-After to pass on to the client.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Router(RouterError::Upstream {
                error:
                    ProviderError::Status {
                        retry_after: Some(d),
                        ..
                    },
                ..
            }) => Some(d.as_secs().max(1)),
            Self::Router(RouterError::Unavailable(_)) => Some(1),
            Self::Governance(GovernanceError::RateLimited { retry_after, .. }) => {
                Some(*retry_after)
            }
            _ => None,
        }
    }

    /// The OpenAI-shaped body.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.parts();
        json!({"error": {"message": self.to_string(), "type": kind, "code": code, "param": null}})
    }
}

fn governance_parts(e: &GovernanceError) -> (StatusCode, &'static str, &'static str) {
    use GovernanceError as G;
    match e {
        G::InvalidKey(_) => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
        ),
        G::KeyDisabled(_) => (StatusCode::FORBIDDEN, "permission_error", "key_disabled"),
        G::ModelNotAllowed(_) => (
            StatusCode::FORBIDDEN,
            "permission_error",
            "model_not_allowed",
        ),
        G::ToolNotAllowed(_) => (
            StatusCode::FORBIDDEN,
            "permission_error",
            "tool_not_allowed",
        ),
        // 402 on purpose: the OpenAI SDKs retry 429s, and a spent budget must not be retried.
        G::BudgetExceeded(_) => (
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_quota",
            "budget_exceeded",
        ),
        G::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        G::Unpriced(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model_unpriced",
        ),
        G::Invalid(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
        ),
        G::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", "conflict"),
        G::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", "not_found"),
        G::Store(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "store_error",
        ),
        G::StoreUnavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "governance_store_unavailable",
        ),
    }
}

fn router_parts(e: &RouterError) -> (StatusCode, &'static str, &'static str) {
    match e {
        RouterError::NoProviders(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "no_providers",
        ),
        RouterError::UnknownModel { .. } => (
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
        ),
        RouterError::Unsupported(_) => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "unsupported",
        ),
        RouterError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "circuit_open",
        ),
        RouterError::Deadline { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", "request_timeout"),
        RouterError::Upstream { error, .. } => match error {
            ProviderError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            ProviderError::Status { status: 429, .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "upstream_rate_limited",
            ),
            ProviderError::Status {
                status: 401 | 403, ..
            } => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "upstream_auth_failed",
            ),
            ProviderError::Status { status: 404, .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ProviderError::Status { status, .. } if (400..500).contains(status) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "upstream_rejected_request",
            ),
            ProviderError::Status { status: 503, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_error",
                "upstream_unavailable",
            ),
            _ => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error"),
        },
    }
}
