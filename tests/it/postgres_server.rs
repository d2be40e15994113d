//! A real PostgreSQL (Debian's `postgresql` package; `.ci/run` installs it): a throwaway cluster
//! made with `initdb` in a temporary directory, run as the `postgres` user on a unix socket with
//! trust authentication, and stopped when dropped. Each test gets a database of its own. Where
//! Postgres is missing, tests fail under CI and say why elsewhere.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster.
pub struct PostgresServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(b) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    c
}

impl PostgresServer {
    /// Starts one, or `None` (outside CI) when PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        let Some(bin) = bin_dir() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide PostgreSQL (apt-get install postgresql)"
            );
            eprintln!("skipping: no PostgreSQL under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let chown = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(chown.success());
        let data = path.join("data");
        let init = as_postgres(&bin, "initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "switchyard",
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let server = Self { bin, dir };
        server.pg_start();
        Some(server)
    }

    fn pg_start(&self) {
        let path = self.dir.path();
        let start = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(path.join("data"))
            .arg("-l")
            .arg(path.join("pg.log"))
            .args(["-w", "start", "-o"])
            .arg(format!(
                "-c listen_addresses='' -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                path.display()
            ))
            .output()
            .unwrap();
        assert!(
            start.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&start.stderr)
        );
    }

    /// Stops the server (to test an unreachable database; a fast shutdown, which keeps what
    /// was committed, as the cluster runs without fsync); [`PostgresServer::restart`] brings it
    /// back with its data.
    pub fn stop(&self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .output();
    }

    /// Starts it again after [`PostgresServer::stop`].
    pub fn restart(&self) {
        self.pg_start();
    }

    /// A new empty database; its URL.
    pub async fn database(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap();
        drop(client);
        let _ = driver.await;
        self.url(name)
    }

    /// `postgresql://switchyard@/<db>?host=<socket dir>`
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://switchyard@/{db}?host={}",
            self.dir.path().display()
        )
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
