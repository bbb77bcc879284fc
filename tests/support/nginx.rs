//! A real `nginx` running the forward-auth example of `deploy/nginx/`, and a
//! tiny blocking HTTP/1.1 client to talk to it (and to the agent).
//!
//! The site is `deploy/nginx/site.conf` with its three example addresses
//! replaced; `revocd-auth.conf` and `revocd-protect.conf` are used as they
//! are. Everything nginx writes (pid, logs, temp files) stays in its own
//! temporary directory, so it runs as root or not without touching `/var`.
//! As root, the worker runs as nginx's default unprivileged user (no `user
//! root;` needed): the master opens the logs, and the small responses here
//! are never buffered to the (unreadable to it) temp directories.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{children_of, free_port};

/// `deploy/nginx/site.conf`: the site, with example addresses.
pub const SITE: &str = include_str!("../../deploy/nginx/site.conf");
/// `deploy/nginx/revocd-auth.conf`: the auth locations (server context).
pub const AUTH: &str = include_str!("../../deploy/nginx/revocd-auth.conf");
/// `deploy/nginx/revocd-protect.conf`: a protected location's directives.
pub const PROTECT: &str = include_str!("../../deploy/nginx/revocd-protect.conf");

/// How long a starting nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The `nginx` binary: on `PATH`, else Debian's `/usr/sbin/nginx`.
///
/// # Panics
/// If there is none: tests need it and are never skipped (`.ci/run`
/// installs it).
pub fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    let binary = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    assert!(
        binary.is_file(),
        "nginx is not installed (apt-get install -y nginx)"
    );
    binary
}

/// `site.conf` with the agent at `agent`, the application at `app` and
/// nginx listening on `listen`.
///
/// # Panics
/// If an example address is not in the file exactly once (the file's
/// header comment promises it is).
pub fn render_site(agent: SocketAddr, app: SocketAddr, listen: SocketAddr) -> String {
    let mut site = SITE.to_owned();
    for (example, actual) in [
        ("server 127.0.0.1:8081;", format!("server {agent};")),
        ("server 127.0.0.1:3000;", format!("server {app};")),
        ("listen 8080;", format!("listen {listen};")),
    ] {
        // Whole lines only: the header comment's mentions do not count.
        let occurrences = site.lines().filter(|line| line.trim() == example).count();
        assert_eq!(
            occurrences, 1,
            "deploy/nginx/site.conf must hold the line {example:?} exactly once"
        );
        site = site
            .lines()
            .map(|line| {
                if line.trim() == example {
                    line.replace(example, &actual)
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        site.push('\n');
    }
    site
}

/// How nginx runs, beyond the deploy site: the tests use the defaults,
/// `examples/agent_wrk.rs` more workers and connections and a server
/// without auth to compare with.
#[derive(Debug, Clone, Copy)]
pub struct NginxOptions {
    /// `worker_processes`.
    pub workers: u32,
    /// `worker_connections`.
    pub worker_connections: u32,
    /// A second server, on its own port, proxying to the same application
    /// (`upstream revocd_protected_app`) with the same non-auth
    /// `proxy_set_header`s as `revocd-protect.conf`, and no `auth_request`.
    pub without_auth: bool,
}

impl Default for NginxOptions {
    fn default() -> Self {
        NginxOptions {
            workers: 1,
            worker_connections: 256,
            without_auth: false,
        }
    }
}

/// A directory holding a runnable nginx configuration: `nginx.conf` (the
/// test's main file), `site.conf` (the rendered deploy site, or another
/// given by [`NginxConfig::with_site`]), the two deploy snippets and a
/// second server acting as the protected application.
pub struct NginxConfig {
    dir: tempfile::TempDir,
    /// Where nginx serves the protected site.
    pub listen: SocketAddr,
    /// Where the protected application (an nginx server too) listens.
    pub app: SocketAddr,
    /// Where the server without auth listens, if asked for.
    pub without_auth: Option<SocketAddr>,
    /// How it runs.
    pub options: NginxOptions,
}

impl NginxConfig {
    /// Writes the configuration for an agent forward-auth port `agent`, on
    /// free loopback ports.
    pub fn new(agent: SocketAddr) -> Self {
        Self::with_options(agent, NginxOptions::default())
    }

    /// [`NginxConfig::new`] with `options`.
    pub fn with_options(agent: SocketAddr, options: NginxOptions) -> Self {
        Self::write(".", options, |listen, app| render_site(agent, app, listen))
    }

    /// A configuration for another site than `deploy/nginx/site.conf` (the
    /// compose or Kubernetes one): `site` is given the free loopback
    /// addresses nginx is to listen on and the application's, and returns
    /// the site's text with them in place. The two snippets are written to
    /// `snippet_dir`, relative to the prefix (where nginx resolves relative
    /// `include`s), as the site expects to find them.
    pub fn with_site(
        snippet_dir: &str,
        site: impl FnOnce(SocketAddr, SocketAddr) -> String,
    ) -> Self {
        Self::write(snippet_dir, NginxOptions::default(), site)
    }

    fn write(
        snippet_dir: &str,
        options: NginxOptions,
        site: impl FnOnce(SocketAddr, SocketAddr) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for nginx");
        let listen = loopback(free_port());
        let app = loopback(free_port());
        let without_auth = options.without_auth.then(|| loopback(free_port()));
        let plain_server = without_auth.map_or(String::new(), |address| {
            format!(
                r#"    server {{
        listen {address};
        location / {{
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_pass http://revocd_protected_app;
        }}
    }}

"#
            )
        });
        let NginxOptions {
            workers,
            worker_connections,
            ..
        } = options;
        let path = dir.path();
        let d = path.to_str().expect("UTF-8 temp path");
        std::fs::write(path.join("site.conf"), site(listen, app)).expect("site");
        let snippets = path.join(snippet_dir);
        std::fs::create_dir_all(&snippets).expect("snippet dir");
        std::fs::write(snippets.join("revocd-auth.conf"), AUTH).expect("auth snippet");
        std::fs::write(snippets.join("revocd-protect.conf"), PROTECT).expect("protect snippet");
        // The application echoes the identity headers it received.
        let main = format!(
            r#"# Written by tests/support/nginx.rs.
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body_temp;
    proxy_temp_path {d}/proxy_temp;
    fastcgi_temp_path {d}/fastcgi_temp;
    uwsgi_temp_path {d}/uwsgi_temp;
    scgi_temp_path {d}/scgi_temp;

{plain_server}    include site.conf;

    server {{
        listen {app};
        location / {{
            default_type text/plain;
            add_header X-Seen-Auth-Subject $http_x_auth_subject always;
            add_header X-Seen-Auth-Jti $http_x_auth_jti always;
            add_header X-Seen-Auth-Issuer $http_x_auth_issuer always;
            return 200 "upstream ok\n";
        }}
    }}
}}
"#
        );
        std::fs::write(path.join("nginx.conf"), main).expect("nginx.conf");
        NginxConfig {
            dir,
            listen,
            app,
            without_auth,
            options,
        }
    }

    /// The configuration's directory (nginx's prefix).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `nginx` with `-p`, `-c` and `-e` pointing into the directory.
    fn command(&self) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("-p")
            .arg(self.dir())
            .arg("-c")
            .arg(self.dir().join("nginx.conf"))
            .arg("-e")
            .arg(self.dir().join("error.log"));
        command
    }

    /// `nginx -t` on the configuration.
    pub fn test(&self) -> Output {
        self.command().arg("-t").output().expect("running nginx -t")
    }

    /// The error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("error.log")).unwrap_or_default()
    }
}

/// A running nginx (master and its workers, in the foreground), stopped when
/// dropped.
pub struct Nginx {
    config: NginxConfig,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx in front of the agent forward-auth port `agent` and
    /// waits until it accepts connections.
    pub fn start(agent: SocketAddr) -> Self {
        Self::start_with(agent, NginxOptions::default())
    }

    /// [`Nginx::start`] with `options`.
    pub fn start_with(agent: SocketAddr, options: NginxOptions) -> Self {
        Self::start_config(NginxConfig::with_options(agent, options))
    }

    /// Starts nginx on `config` and waits until it accepts connections.
    ///
    /// # Panics
    /// If nginx exits at start or does not listen within 10 s.
    pub fn start_config(config: NginxConfig) -> Self {
        let child = config
            .command()
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let mut nginx = Nginx {
            config,
            child: Some(child),
        };
        // The master writes its pid file once it has bound every port (so a
        // port taken by someone else cannot pass for nginx).
        let pid_file = nginx.config.dir().join("nginx.pid");
        let ready = |nginx: &Nginx| {
            std::fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0)
                && [Some(nginx.config.listen), nginx.config.without_auth]
                    .into_iter()
                    .flatten()
                    .all(|address| {
                        TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                    })
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready(&nginx) {
            if let Some(status) = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "nginx exited at start ({status}):\n{}",
                    nginx.config.error_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not start listening on {}:\n{}",
                nginx.config.listen,
                nginx.config.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        nginx
    }

    /// Where it serves the protected site.
    pub fn address(&self) -> SocketAddr {
        self.config.listen
    }

    /// Where it serves the application without auth, if asked for
    /// ([`NginxOptions::without_auth`]).
    pub fn without_auth(&self) -> Option<SocketAddr> {
        self.config.without_auth
    }

    /// The pids of the master and its workers, once all the workers it was
    /// configured with are running.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.as_ref().expect("nginx running").id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let workers = children_of(master);
            if workers.len() >= self.config.options.workers as usize {
                return std::iter::once(master).chain(workers).collect();
            }
            assert!(
                Instant::now() < deadline,
                "nginx started {} of {} workers:\n{}",
                workers.len(),
                self.config.options.workers,
                self.config.error_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `GET path` on the protected site with `authorization: Bearer <token>`
    /// (no header for `None`).
    pub fn get(&self, path: &str, token: Option<&str>) -> HttpResponse {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|value| vec![("Authorization", value)])
            .unwrap_or_default();
        self.get_with(path, &headers)
    }

    /// `GET path` on the protected site with `headers`.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_get(self.address(), path, headers)
            .unwrap_or_else(|e| panic!("GET {path} from nginx: {e}\n{}", self.config.error_log()))
    }

    /// The error log so far.
    pub fn error_log(&self) -> String {
        self.config.error_log()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // A fast shutdown through the master, which takes its worker along
        // (SIGKILL on the master would leave the worker serving).
        let _ = self
            .config
            .command()
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An HTTP response, headers in the order received.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// `(name, value)`, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (lossy UTF-8).
    pub body: String,
}

impl HttpResponse {
    /// Every value of header `name` (case-insensitive).
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The only value of header `name`, `None` when absent.
    ///
    /// # Panics
    /// If the header is sent more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let values = self.header_values(name);
        assert!(
            values.len() <= 1,
            "{name} sent {} times: {self:?}",
            values.len()
        );
        values.first().copied()
    }
}

/// `GET path` over a fresh connection (`Connection: close`), read to the
/// end, with a 10-second timeout.
///
/// # Errors
/// A connection failure or a response that is not HTTP/1.x.
pub fn http_get(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_request(address, "GET", path, headers, b"")
}

/// `POST path` with `body` (its `Content-Length` added), as
/// [`http_get`] sends a `GET`.
///
/// # Errors
/// A connection failure or a response that is not HTTP/1.x.
pub fn http_post(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    http_request(address, "POST", path, headers, body)
}

fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    if method != "GET" {
        let _ = write!(request, "Content-Length: {}\r\n", body.len());
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Parses a whole HTTP/1.x response as read from the connection.
///
/// # Errors
/// A response that is not HTTP/1.x or is cut short.
pub fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| invalid("non-UTF-8 head"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not HTTP/1.x: {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers = lines
        .map(|line| {
            line.split_once(':')
                .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
                .ok_or_else(|| invalid(format!("bad header line {line:?}")))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = unchunk(&body)?;
    } else if let Some((_, length)) = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    {
        let length: usize = length.parse().map_err(|_| invalid("bad content-length"))?;
        if body.len() < length {
            return Err(invalid("body shorter than content-length"));
        }
        body.truncate(length);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Decodes a chunked body (extensions and trailers ignored).
fn unchunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("unterminated chunk size"))?;
        let size_text =
            std::str::from_utf8(&data[..line_end]).map_err(|_| invalid("chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if data.len() < size + 2 {
            return Err(invalid("truncated chunk"));
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}
