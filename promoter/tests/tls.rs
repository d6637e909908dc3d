//! jobq against a Postgres and a Redis that speak TLS only, with certificates made here (openssl
//! CLI): the seed's flows pass with `sslmode=verify-full` and `rediss://` with an ACL user, and a
//! server whose certificate does not match is refused while verification is on.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jobq_shared::{Queue, Store};
use support::seed::run_seed_flows;
use support::{PrivatePostgres, PrivateRedis};

const REDIS_USER: &str = "jobq";
const REDIS_PASSWORD: &str = "s3cret-token-for-tests";

/// A CA, a certificate it issued for `localhost` only (Postgres), one for `localhost` and
/// 127.0.0.1 (Redis), and an unrelated CA that issued neither.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make() -> Certs {
        let dir = std::env::temp_dir().join(format!("jobq-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let certs = Certs { dir };
        certs.ca("ca");
        certs.ca("other-ca");
        certs.leaf("pg", "ca", "DNS:localhost");
        certs.leaf("redis", "ca", "DNS:localhost,IP:127.0.0.1");
        certs
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ca(&self, name: &str) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=jobq test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, san: &str) {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.path(&ext),
            format!(
                "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("write extensions");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Servers {
    certs: Certs,
    pg: PrivatePostgres,
    redis: PrivateRedis,
}

impl Servers {
    fn start() -> Servers {
        let certs = Certs::make();
        let pg = PrivatePostgres::start_new_tls(&certs.path("pg.pem"), &certs.path("pg.key"));
        let redis = PrivateRedis::start_new_tls(
            &certs.path("redis.pem"),
            &certs.path("redis.key"),
            &certs.path("ca.pem"),
            REDIS_USER,
            REDIS_PASSWORD,
        );
        Servers { certs, pg, redis }
    }

    /// The private server's `postgres` database as `host` (TCP always to 127.0.0.1), in `sslmode`,
    /// trusting the CA file `ca`.
    fn pg_url(&self, host: &str, sslmode: &str, ca: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&sslmode={sslmode}&sslrootcert={}",
            self.pg.port(),
            self.certs.path(ca).display()
        )
    }

    fn store(&self, url: &str) -> Store {
        Store::connect(url, 4, Duration::from_secs(5)).expect("pool")
    }

    fn queue(&self, ca: &str) -> Queue {
        let url = format!("rediss://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{}", self.redis.port());
        let pem = std::fs::read(self.certs.path(ca)).expect("read CA");
        Queue::connect_with_ca(&url, "jobq-tls", Some(pem)).expect("client")
    }
}

/// The whole error chain, to find what a refusal was about.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_flows_pass_over_verify_full_and_rediss_with_an_acl_user() {
    let servers = Servers::start();
    let store = servers.store(&servers.pg_url("localhost", "verify-full", "ca.pem"));
    store.migrate().await.expect("migrate over verify-full");
    let queue = servers.queue("ca.pem");
    queue.ping().await.expect("redis over TLS with AUTH");
    run_seed_flows(&store, &queue).await;

    // The servers take nothing else: plain Postgres and plain Redis are refused.
    let plain_pg = servers.store(&format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        servers.pg.port()
    ));
    let err = plain_pg.migrate().await.expect_err("pg_hba.conf allows hostssl only");
    assert!(chain(&err).contains("no pg_hba.conf entry"), "{}", chain(&err));
    let plain_redis = Queue::connect(
        &format!(
            "redis://{REDIS_USER}:{REDIS_PASSWORD}@127.0.0.1:{}",
            servers.redis.port()
        ),
        "jobq-tls",
    )
    .expect("client");
    plain_redis
        .ping()
        .await
        .expect_err("the TLS port does not speak plain Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_match_is_refused_while_verification_is_on() {
    let servers = Servers::start();

    // Issued by a CA we do not trust.
    let err = servers
        .store(&servers.pg_url("localhost", "verify-full", "other-ca.pem"))
        .migrate()
        .await
        .expect_err("unknown issuer");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));
    let err = servers
        .store(&servers.pg_url("localhost", "verify-ca", "other-ca.pem"))
        .migrate()
        .await
        .expect_err("verify-ca checks the issuer too");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));
    let err = servers
        .queue("other-ca.pem")
        .ping()
        .await
        .expect_err("redis: unknown issuer");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));

    // Trusted, but issued for another name (the certificate names localhost, not 127.0.0.1).
    let err = servers
        .store(&servers.pg_url("127.0.0.1", "verify-full", "ca.pem"))
        .migrate()
        .await
        .expect_err("name mismatch");
    assert!(chain(&err).contains("not valid for name"), "{}", chain(&err));

    // What verify-ca and require accept, by their definitions.
    servers
        .store(&servers.pg_url("127.0.0.1", "verify-ca", "ca.pem"))
        .migrate()
        .await
        .expect("verify-ca does not check the name");
    servers
        .store(&servers.pg_url("localhost", "require", "other-ca.pem"))
        .migrate()
        .await
        .expect("require encrypts without checking the certificate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_from_an_untrusted_ca_is_refused() {
    let servers = Servers::start();
    let err = servers.queue("other-ca.pem").ping().await.expect_err("unknown issuer");
    assert!(chain(&err).contains("UnknownIssuer"), "{}", chain(&err));
    servers.queue("ca.pem").ping().await.expect("the right CA is accepted");
}
