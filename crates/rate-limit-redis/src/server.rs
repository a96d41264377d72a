//! A throwaway `redis-server` on a free loopback port, for tests, examples and benchmarks
//! that must not touch a shared instance.

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A `redis-server` child process that keeps nothing on disk; killed when dropped.
///
/// The binary is `redis-server` on the `PATH`, or the one named by `SEAWALL_REDIS_SERVER`.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    tls: bool,
}

impl RedisServer {
    /// Starts a server on a free port of 127.0.0.1 and returns once it accepts connections.
    pub fn start() -> io::Result<Self> {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        Self::start_on(port)
    }

    /// Starts a server on `port` (for example to bring back one that was killed).
    pub fn start_on(port: u16) -> io::Result<Self> {
        Self::spawn(port, &["--port", &port.to_string()], false)
    }

    /// Starts a server that speaks only TLS, on a free port of 127.0.0.1, with the
    /// certificate and key in the PEM files given (the certificate must name `127.0.0.1`),
    /// and returns once it accepts connections. Clients are not asked for certificates;
    /// `ca_file` is the authority the server would check them against. The binary must be
    /// built with TLS (Debian's is).
    pub fn start_tls(cert_file: &Path, key_file: &Path, ca_file: &Path) -> io::Result<Self> {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let file = |path: &Path| path.to_string_lossy().into_owned();
        let args = [
            "--port".to_owned(),
            "0".to_owned(),
            "--tls-port".to_owned(),
            port.to_string(),
            "--tls-cert-file".to_owned(),
            file(cert_file),
            "--tls-key-file".to_owned(),
            file(key_file),
            "--tls-ca-cert-file".to_owned(),
            file(ca_file),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn(port, &args, true)
    }

    fn spawn(port: u16, listen: &[&str], tls: bool) -> io::Result<Self> {
        let binary =
            std::env::var("SEAWALL_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut child = Command::new(&binary)
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "notice", "--logfile", ""])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot run `{binary}` (Debian package redis-server): {error}"),
                )
            })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(io::Error::other("redis-server has no stdout"));
        };
        // Ready once it says so; the rest of its log is drained so it never blocks on a pipe.
        let mut lines = BufReader::new(stdout).lines();
        let mut log = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Ready to accept connections") => break,
                Some(Ok(line)) => log.push(line),
                Some(Err(error)) => return Err(error),
                None => {
                    let _ = child.wait();
                    return Err(io::Error::other(format!(
                        "redis-server on port {port} exited before it was ready:\n{}",
                        log.join("\n")
                    )));
                }
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Self { child, port, tls })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`, or `rediss://…` for a server started with
    /// [`start_tls`](Self::start_tls).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// Kills the server at once (`SIGKILL`, as a crash would) and waits for it to be gone.
    pub fn kill(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
