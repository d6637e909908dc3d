//! Private Postgres and Redis servers for fault-injection tests: each test starts its own, on a free
//! port and in a temporary directory, so that it can stop and restart them without disturbing the
//! machine's servers or other tests. Dropping a server kills it and removes its directory.
#![allow(dead_code)]

pub mod seed;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out by this process, so that two tests never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port that was free a moment ago: bound on port 0, read, closed. Never the same twice in one process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind an ephemeral port")
            .port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A fresh directory under the system temp dir.
fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobq-faults-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits for `child` to exit, up to `within`; returns whether it did.
fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let give_up = Instant::now() + within;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The uid and gid of the `postgres` OS user, from /etc/passwd.
fn postgres_user() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.first() != Some(&"postgres") || fields.len() < 4 {
                return None;
            }
            Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
        })
        .expect("initdb refuses to run as root, and there is no postgres user to run it as")
}

/// The bin directory of the highest installed Postgres version.
fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let best = std::fs::read_dir(root)
        .expect("/usr/lib/postgresql (Debian's postgresql packages) is missing")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version: u32 = name.split('.').next()?.parse().ok()?;
            e.path().join("bin/postgres").exists().then_some((version, e.path()))
        })
        .max_by_key(|(version, _)| *version)
        .expect("no Postgres server binaries under /usr/lib/postgresql/*/bin");
    best.1.join("bin")
}

/// A Postgres server of our own: `initdb` into a temp dir, the server as a child process.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Set when we run as root: the server then runs as the `postgres` user.
    run_as: Option<(u32, u32)>,
    /// Extra `-c name=value` settings given at every start.
    settings: Vec<String>,
    child: Option<Child>,
}

impl PrivatePostgres {
    /// Initializes a cluster (user `postgres`, trust auth) and starts it.
    pub fn start_new() -> PrivatePostgres {
        Self::start_new_with(None)
    }

    /// A cluster that accepts TLS connections only (`hostssl` in pg_hba.conf, trust auth), with
    /// `cert` and `key` (PEM files) as its certificate.
    pub fn start_new_tls(cert: &Path, key: &Path) -> PrivatePostgres {
        Self::start_new_with(Some((cert, key)))
    }

    fn start_new_with(tls: Option<(&Path, &Path)>) -> PrivatePostgres {
        let bin = postgres_bin();
        let dir = temp_dir("pg");
        let run_as = is_root().then(postgres_user);
        if let Some((uid, gid)) = run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown of {dir:?} failed");
        }
        let mut pg = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
            run_as,
            settings: Vec::new(),
            child: None,
        };
        let mut initdb = pg.command("initdb");
        initdb
            .arg("-D")
            .arg(pg.data_dir())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdout(Stdio::null());
        let output = initdb.output().expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some((cert, key)) = tls {
            // The server reads its key as its own user and refuses one others can read.
            let (server_cert, server_key) = (pg.dir.join("server.pem"), pg.dir.join("server.key"));
            std::fs::copy(cert, &server_cert).expect("copy certificate");
            std::fs::copy(key, &server_key).expect("copy key");
            std::fs::write(
                pg.data_dir().join("pg_hba.conf"),
                "hostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n",
            )
            .expect("write pg_hba.conf");
            let status = Command::new("chmod")
                .arg("600")
                .arg(&server_key)
                .status()
                .expect("chmod");
            assert!(status.success(), "chmod of the key failed");
            if let Some((uid, gid)) = run_as {
                let status = Command::new("chown")
                    .arg(format!("{uid}:{gid}"))
                    .arg(&server_cert)
                    .arg(&server_key)
                    .arg(pg.data_dir().join("pg_hba.conf"))
                    .status()
                    .expect("chown");
                assert!(status.success(), "chown of the certificate failed");
            }
            pg.settings = vec![
                "ssl=on".into(),
                format!("ssl_cert_file={}", server_cert.display()),
                format!("ssl_key_file={}", server_key.display()),
            ];
        }
        pg.start();
        pg
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.env("LC_ALL", "C").current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server (again, on the same port and data directory) and waits until it accepts
    /// connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "postgres is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("postgres.log"))
            .expect("open log");
        if let Some((uid, gid)) = self.run_as {
            let _ = Command::new("chown")
                .arg(format!("{uid}:{gid}"))
                .arg(self.dir.join("postgres.log"))
                .status();
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "max_connections=60",
                "-c",
                "shared_buffers=16MB",
            ])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30));
    }

    fn wait_ready(&mut self, within: Duration) {
        let give_up = Instant::now() + within;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-U", "postgres", "-d", "postgres", "-h", "127.0.0.1"])
                .args(["-p", &self.port.to_string(), "-t", "1"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("postgres exited at start ({status}): {}", self.log_tail());
            }
            assert!(Instant::now() < give_up, "postgres not ready: {}", self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fast shutdown (sessions are ended, work is flushed); waits until the server has exited.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), "INT");
        if !wait_exit(&mut child, Duration::from_secs(30)) {
            signal(child.id(), "QUIT");
            if !wait_exit(&mut child, Duration::from_secs(5)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The postmaster and every process it forked (backends, background workers).
    fn server_pids(&self) -> Vec<u32> {
        let Some(child) = self.child.as_ref() else {
            return Vec::new();
        };
        let postmaster = child.id();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ')'.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Freezes the server (SIGSTOP to it and its backends): connections stay open, nothing answers,
    /// as with a hung host or a network partition.
    pub fn freeze(&mut self) {
        for pid in self.server_pids() {
            signal(pid, "STOP");
        }
    }

    /// Kills the server and all its processes with SIGKILL (a crash: no shutdown checkpoint), and
    /// waits until the postmaster is gone. `start` then runs crash recovery from the WAL.
    pub fn crash(&mut self) {
        let pids = self.server_pids();
        for pid in &pids {
            signal(*pid, "KILL");
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The backends are not our children: wait until they are gone too.
        let give_up = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|pid| Path::new(&format!("/proc/{pid}")).exists()) && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Undoes [`PrivatePostgres::freeze`].
    pub fn thaw(&mut self) {
        for pid in self.server_pids() {
            signal(pid, "CONT");
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.thaw();
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the postmaster ends its backends and exits.
            signal(child.id(), "QUIT");
            if !wait_exit(&mut child, Duration::from_secs(5)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("private postgres log (tail):\n{}", self.log_tail());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server of our own, without persistence: a restart comes back empty.
pub struct PrivateRedis {
    dir: PathBuf,
    port: u16,
    /// Extra arguments given at every start (TLS, users).
    args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl PrivateRedis {
    pub fn start_new() -> PrivateRedis {
        let mut redis = PrivateRedis {
            dir: temp_dir("redis"),
            port: free_port(),
            args: Vec::new(),
            tls: false,
            child: None,
        };
        redis.start();
        redis
    }

    /// A Redis that speaks TLS only (no plain port), with `cert`/`key` as its certificate and no
    /// client certificates asked for; `user` with `password` is its only enabled ACL user.
    pub fn start_new_tls(cert: &Path, key: &Path, ca: &Path, user: &str, password: &str) -> PrivateRedis {
        let port = free_port();
        let path = |p: &Path| p.display().to_string();
        let mut redis = PrivateRedis {
            dir: temp_dir("redis"),
            port,
            args: vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
                "--user".into(),
                "default".into(),
                "off".into(),
                "--user".into(),
                user.into(),
                "on".into(),
                format!(">{password}"),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
            ],
            tls: true,
            child: None,
        };
        redis.start();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again, on the same port: empty) and waits until it answers PING.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis is already running");
        let mut command = Command::new("redis-server");
        if self.args.is_empty() {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(&self.args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let give_up = Instant::now() + Duration::from_secs(15);
        while !self.answers_ping() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited at start: {status}");
            }
            assert!(Instant::now() < give_up, "redis-server did not answer PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            // Listening is enough: a plain PING would only be dropped by the TLS port.
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Writes a snapshot (`SAVE`) into the server's directory, which the next [`PrivateRedis::start`]
    /// loads: a restart after it comes back with the data as it was at the snapshot.
    pub fn save(&self) {
        assert!(!self.tls, "save speaks plain RESP");
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        stream.write_all(b"SAVE\r\n").expect("send SAVE");
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).expect("SAVE answer");
        assert!(
            buf[..n].starts_with(b"+OK"),
            "SAVE answered {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }

    /// Kills the server and starts it again on the same port: with what it held at a snapshot
    /// taken just before the kill when `keep_data`, empty otherwise.
    pub fn restart(&mut self, keep_data: bool) {
        if keep_data {
            self.save();
        }
        self.stop();
        if !keep_data {
            let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        }
        self.start();
    }

    /// Kills the server (as a crash would) and waits until it has exited; everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed (and reaped) when dropped; its stderr goes to a log file that is printed
/// if the test fails.
pub struct ChildGuard {
    child: Child,
    log: PathBuf,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout discarded and stderr captured.
    pub fn spawn(mut cmd: Command) -> ChildGuard {
        let log = std::env::temp_dir().join(format!("jobq-faults-child-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("child log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn child");
        ChildGuard { child, log }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asserts the child is still running.
    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "child exited early ({status}): {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "child log (tail):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A Redis Cluster of our own: `masters` redis-servers in cluster mode, without persistence,
/// joined by `redis-cli --cluster create` (the slots spread evenly over them), with `replicas`
/// replicas of each master.
pub struct PrivateCluster {
    nodes: Vec<PrivateRedis>,
}

impl PrivateCluster {
    pub fn start_new(masters: usize) -> PrivateCluster {
        Self::start_with_replicas(masters, 0)
    }

    pub fn start_with_replicas(masters: usize, replicas: usize) -> PrivateCluster {
        let nodes: Vec<PrivateRedis> = (0..masters * (1 + replicas))
            .map(|_| {
                let port = free_port();
                let mut redis = PrivateRedis {
                    dir: temp_dir("redis-cluster"),
                    port,
                    args: vec![
                        "--port".into(),
                        port.to_string(),
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        "nodes.conf".into(),
                        // The bus port is port + 10000 unless set: that one may be taken.
                        "--cluster-port".into(),
                        free_port().to_string(),
                        "--cluster-node-timeout".into(),
                        "2000".into(),
                    ],
                    tls: false,
                    child: None,
                };
                redis.start();
                redis
            })
            .collect();
        let cluster = PrivateCluster { nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in cluster.ports() {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let give_up = Instant::now() + Duration::from_secs(30);
        while !cluster
            .ports()
            .iter()
            .all(|port| cli(*port, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < give_up, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(PrivateRedis::port).collect()
    }

    /// Every node's URL, comma-separated (`REDIS_URL` with `REDIS_CLUSTER=true`).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(PrivateRedis::url).collect::<Vec<_>>().join(",")
    }

    /// A node that runs (not killed).
    fn live(&self) -> u16 {
        self.nodes
            .iter()
            .find(|node| node.child.is_some())
            .map(PrivateRedis::port)
            .expect("a node that runs")
    }

    /// Waits until every replica has synchronised with its master.
    pub fn wait_for_replicas(&self) {
        let give_up = Instant::now() + Duration::from_secs(30);
        for port in self.ports() {
            loop {
                let info = cli(port, &["info", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(Instant::now() < give_up, "the replica on {port} never synchronised");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Kills the node on `port`, as a crash would.
    pub fn kill(&mut self, port: u16) {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node on that port")
            .stop();
    }

    /// The hash slot of `key`.
    pub fn slot(&self, key: &str) -> u16 {
        cli(self.live(), &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The port of the master that serves `slot`, as a live node sees it (a master marked failed
    /// serves nothing).
    pub fn owner(&self, slot: u16) -> u16 {
        self.try_owner(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// [`PrivateCluster::owner`], or `None` while no master serves `slot` (a failover).
    pub fn try_owner(&self, slot: u16) -> Option<u16> {
        for line in cli(self.live(), &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 3 || fields[2].contains("fail") {
                continue;
            }
            let owns = fields.iter().skip(8).any(|range| match range.split_once('-') {
                Some((from, to)) => {
                    from.parse::<u16>().is_ok_and(|from| from <= slot) && to.parse::<u16>().is_ok_and(|to| slot <= to)
                }
                None => range.parse::<u16>().is_ok_and(|one| one == slot),
            });
            if owns {
                let address = fields[1].split('@').next().expect("ip:port");
                return Some(address.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port"));
            }
        }
        None
    }

    /// How many keys a node holds.
    pub fn keys_on(&self, port: u16) -> usize {
        cli(port, &["dbsize"]).trim().parse().expect("a count")
    }

    /// Moves `slot` with its keys from its master to the master on port `to`, as a resharding
    /// does: IMPORTING and MIGRATING (clients are sent ASK meanwhile), MIGRATE of its keys in
    /// batches, then the new owner announced to every node (clients are sent MOVED after).
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let id = |port: u16| cli(port, &["cluster", "myid"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        let slot_text = slot.to_string();
        expect_ok(cli(to, &["cluster", "setslot", &slot_text, "importing", &from_id]));
        expect_ok(cli(from, &["cluster", "setslot", &slot_text, "migrating", &to_id]));
        loop {
            let keys = cli(from, &["cluster", "getkeysinslot", &slot_text, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_text = to.to_string();
            let mut args = vec!["migrate", "127.0.0.1", &to_text, "", "0", "5000", "keys"];
            args.extend(keys);
            expect_ok(cli(from, &args));
        }
        for port in [to, from] {
            expect_ok(cli(port, &["cluster", "setslot", &slot_text, "node", &to_id]));
        }
        for port in self.ports() {
            if port != to && port != from {
                expect_ok(cli(port, &["cluster", "setslot", &slot_text, "node", &to_id]));
            }
        }
    }
}

/// Runs one redis-cli command against the node on `port`; returns its output (raw, one line per
/// element).
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn expect_ok(answer: String) {
    assert_eq!(answer.trim(), "OK", "redis answered {answer:?}");
}
