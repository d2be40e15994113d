//! The floor of the gateway's own stack: a reverse proxy made of nothing but what the gateway's
//! request path is built on (tokio's multi-thread runtime, hyper's HTTP/1 server, hyper-util's
//! pooled client with `TCP_NODELAY`, mimalloc), forwarding each request's method, path, content
//! type and body to one upstream and its answer back (status, content type, body streamed as it
//! comes). No JSON, no stages, no logs. `bench/run.sh` measures it beside the nginx proxy and the
//! gateway with `FLOOR=1`: what the gateway costs above it is what its features and its own code
//! cost; what it costs above the nginx proxy is the stack's.
//!
//! `cargo run --release --example hyper_floor -- 127.0.0.1:18085 127.0.0.1:18081`
//!
//! `FLOOR_SPIN_US=<n>` makes it busy-wait `n` microseconds in user space per request before it
//! answers: the same system calls at a lower request rate, to see how the kernel's cost of a
//! request depends on the rate alone (the peers on the other CPU idle more often and each write
//! must wake them). `FLOOR_TOUCH_KB=<k>` makes that wait write one byte of each cache line of a
//! `k` KiB buffer in turn instead of spinning in place (carrying on across requests): the same
//! user time, but with a buffer larger than the caches it pushes the kernel's code and data out of
//! them, to see whether the kernel's cost of a request grows with the memory a request goes
//! through.
#![allow(clippy::print_stderr)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

thread_local! {
    /// The buffer `FLOOR_TOUCH_KB` walks, and where the walk is (empty: the wait spins in place).
    static TOUCH: std::cell::RefCell<(Vec<u8>, usize)> = {
        let kb = std::env::var("FLOOR_TOUCH_KB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        std::cell::RefCell::new((vec![0; kb * 1024], 0))
    };
}

type Pool = Client<HttpConnector, Full<Bytes>>;
type Answer = Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>>;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream] => listen
            .parse::<SocketAddr>()
            .ok()
            .zip(upstream.parse::<SocketAddr>().ok()),
        _ => None,
    };
    let Some((listen, upstream)) = parsed else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR (both host:port)");
        return std::process::ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let spin = std::env::var("FLOOR_SPIN_US")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_micros);
    match runtime.block_on(serve(listen, upstream, spin)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_floor: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

// The bench kills the process: no graceful shutdown to wait for its connections' tasks.
#[allow(clippy::disallowed_methods)]
async fn serve(listen: SocketAddr, upstream: SocketAddr, spin: Duration) -> std::io::Result<()> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let pool: Pool = Client::builder(TokioExecutor::new()).build(http);
    let base = format!("http://{upstream}");
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (pool, base) = (pool.clone(), base.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                forward(pool.clone(), base.clone(), req, spin)
            });
            // Errors end the connection, as a client going away does.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn forward(
    pool: Pool,
    base: String,
    req: Request<Incoming>,
    spin: Duration,
) -> Result<Answer, Infallible> {
    let answer = try_forward(&pool, &base, req).await;
    if !spin.is_zero() {
        let until = Instant::now() + spin;
        TOUCH.with(|t| {
            let (buf, at) = &mut *t.borrow_mut();
            // 4 KiB at a time between clock reads, carrying on where the last request stopped:
            // the wait stays `spin` long whatever the buffer's size, and a buffer larger than
            // the caches brings new lines into them on every request.
            while Instant::now() < until {
                if buf.is_empty() {
                    std::hint::spin_loop();
                    continue;
                }
                for _ in 0..64 {
                    *at = (*at + 64) % buf.len();
                    if let Some(b) = buf.get_mut(*at) {
                        *b = b.wrapping_add(1);
                    }
                }
            }
            std::hint::black_box(&*buf);
        });
    }
    match answer {
        Ok(resp) => Ok(resp),
        Err(e) => {
            let mut resp = Response::new(
                Full::new(Bytes::from(e))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(resp)
        }
    }
}

async fn try_forward(pool: &Pool, base: &str, req: Request<Incoming>) -> Result<Answer, String> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut up = Request::builder()
        .method(parts.method)
        .uri(format!("{base}{path}"));
    if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
        up = up.header(CONTENT_TYPE, ct);
    }
    let up = up.body(Full::new(body)).map_err(|e| e.to_string())?;
    let answer = pool.request(up).await.map_err(|e| e.to_string())?;
    let (parts, body) = answer.into_parts();
    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = parts.status;
    let ct = parts.headers.get(CONTENT_TYPE).cloned();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        ct.unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    Ok(resp)
}
