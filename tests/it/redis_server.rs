//! A real `redis-server` (Debian's package; `.ci/run` installs it) on a unix socket in a temporary
//! directory, without persistence (or with an append-only file, to be restarted); stopped when
//! dropped. Where it is missing, tests fail under CI and say why elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running redis-server.
pub struct RedisServer {
    child: Child,
    /// `unix:///tmp/.../redis.sock`
    pub url: String,
    socket: PathBuf,
    aof: bool,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or `None` (outside CI) when `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::launch(false)
    }

    /// Starts one that writes every change to an append-only file (fsync on each), as a
    /// production Redis for governance should run, so that [`RedisServer::restart`] keeps data.
    pub fn start_persistent() -> Option<Self> {
        Self::launch(true)
    }

    fn launch(aof: bool) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = match spawn(dir.path(), &socket, aof) {
            Ok(c) => c,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must provide redis-server (apt-get install redis-server): {e}"
                );
                eprintln!("skipping: no redis-server ({e})");
                return None;
            }
        };
        wait_for(&socket);
        Some(Self {
            child,
            url: format!("unix://{}", socket.display()),
            socket,
            aof,
            dir,
        })
    }

    /// Stops the server and starts it again on the same socket and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.dir.path(), &self.socket, self.aof).unwrap();
        wait_for(&self.socket);
    }

    /// Stops the server (to test an unreachable store).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// A client connection.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

fn spawn(dir: &Path, socket: &Path, aof: bool) -> std::io::Result<Child> {
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    Command::new(&bin)
        .args(["--port", "0", "--save", "", "--unixsocketperm", "700"])
        .args(if aof {
            ["--appendonly", "yes", "--appendfsync", "always"].as_slice()
        } else {
            ["--appendonly", "no"].as_slice()
        })
        .arg("--unixsocket")
        .arg(socket)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn wait_for(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
