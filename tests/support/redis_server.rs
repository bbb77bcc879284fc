//! A real `redis-server` for tests and benchmarks: its own free loopback
//! port, its own temporary directory, killed when dropped. It never touches
//! the machine's own Redis or its data.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments, kept for restarts.
    extra: Vec<String>,
    /// A program and its arguments that run `redis-server` (a profiler),
    /// or none.
    wrapper: Vec<String>,
    /// The password it requires (`--requirepass`), if any.
    password: Option<String>,
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port, persistence off.
    ///
    /// # Panics
    /// If `redis-server` is not installed or does not start: tests need it
    /// and are never skipped (`.ci/run` installs it).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `redis-server` with extra arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(extra, None)
    }

    /// Starts `redis-server` requiring `password` (`--requirepass`), which
    /// [`RedisServer::url`] then carries.
    pub fn start_with_password(password: &str) -> Self {
        Self::launch(&["--requirepass", password], Some(password))
    }

    /// Starts `redis-server` as the last argument of `wrapper` (a program
    /// and its arguments, such as `valgrind --tool=callgrind`), which must
    /// run it in its own process, so [`RedisServer::pid`] is the server's.
    pub fn start_wrapped(wrapper: &[String]) -> Self {
        let mut server = Self::unstarted(&[], None);
        server.wrapper = wrapper.to_vec();
        server.spawn();
        server
    }

    fn launch(extra: &[&str], password: Option<&str>) -> Self {
        let mut server = Self::unstarted(extra, password);
        server.spawn();
        server
    }

    fn unstarted(extra: &[&str], password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("creating a temp dir for redis-server");
        let port = free_port();
        RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            wrapper: Vec::new(),
            password: password.map(str::to_owned),
        }
    }

    /// `redis://127.0.0.1:<port>`, or `redis://:<password>@127.0.0.1:<port>`
    /// when it requires one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `revocd serve` flags for strict durability on this server, with a
    /// 500 ms store timeout and heartbeats every 200 ms, so that a killed
    /// Redis is noticed at once and its return within a second.
    pub fn strict_serve_flags(&self) -> Vec<String> {
        [
            "--redis-url",
            &self.url(),
            "--durability",
            "strict",
            "--redis-timeout",
            "500ms",
            "--heartbeat-interval",
            "200ms",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (`None` once killed).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, directory and arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A synchronous connection for direct inspection.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|client| client.get_connection())
            .expect("connecting to the test redis-server")
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut command = match self.wrapper.split_first() {
            Some((program, arguments)) => {
                let mut command = Command::new(program);
                command.args(arguments).arg("redis-server");
                command
            }
            None => Command::new("redis-server"),
        };
        let child = command
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", path_str(self.dir.path())])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server (install it: apt-get install -y redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = redis::Client::open(self.url())
                .and_then(|client| client.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
            if ready.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("finding a free port")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp dir path is UTF-8")
}
