//! The containers backend's building block: starts Kafka, MongoDB and PostgreSQL from official
//! Docker images (through `testcontainers`) and hands back their addresses, so a scenario can run
//! against real services (`crate::services::run_services`) without installing anything but
//! Docker.
//!
//! Where there is no Docker engine, [`docker_available`] (and so [`start`]) fails at once, with
//! no network wait, and names the way out: `scripts/services.sh` and `--backend services`.
//!
//! What runs, all published on random host ports of the local machine:
//! - Kafka [`KAFKA_IMAGE`], KRaft, one node that is both broker and controller. The broker
//!   advertises `127.0.0.1:<host port>`, so clients on this machine can produce and consume;
//!   for that reason the Docker engine must be local.
//! - MongoDB [`MONGO_IMAGE`], standalone, no authentication.
//! - PostgreSQL [`POSTGRES_IMAGE`] with database `smart_city`, user and password
//!   [`POSTGRES_USER`] / [`POSTGRES_PASSWORD`], fsync off (throwaway data).
//!
//! The containers are removed when [`Containers`] is dropped.

use std::io;
use std::net::{IpAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use testcontainers_modules::kafka::apache;
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{
    ContainerAsync, ContainerRequest, Image, ImageExt, TestcontainersError,
};

use crate::SimError;
use crate::run::{Progress, RunResult};
use crate::scenario::Scenario;
use crate::services::{Addresses, ServicesOptions};

/// Kafka's official image and pinned tag (the JVM image, as in `docker-compose.yml`).
pub const KAFKA_IMAGE: (&str, &str) = ("apache/kafka", "4.1.0");
/// MongoDB's official image and pinned tag.
pub const MONGO_IMAGE: (&str, &str) = ("mongo", "7.0.14");
/// PostgreSQL's official image and pinned tag.
pub const POSTGRES_IMAGE: (&str, &str) = ("postgres", "15.8");
/// The PostgreSQL database the pipeline writes to.
pub const POSTGRES_DB: &str = "smart_city";
/// The PostgreSQL user.
pub const POSTGRES_USER: &str = "smart_city";
/// The PostgreSQL user's password (a throwaway container's).
pub const POSTGRES_PASSWORD: &str = "smart_city";

/// A start timeout that leaves room for pulling the three images on first use.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long [`docker_available`] may wait for a TCP Docker engine to accept a connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Label on every container this module starts, to find leftovers: `docker ps --filter label=…`.
const LABEL: (&str, &str) = ("org.smart-city.simulator", "containers");
/// Where testcontainers itself looks for a socket when `DOCKER_HOST` is unset, in its order.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// What to do instead, appended to every "no Docker engine" error.
const WAY_OUT: &str = "Without Docker, run the same services as plain processes: \
    `bash scripts/services.sh up`, then `eval \"$(bash scripts/services.sh env)\"`, then rerun \
    with `--backend services` (or use `--backend memory`, which needs no services)";

/// Kafka, MongoDB and PostgreSQL running in containers; dropping this removes them.
///
/// Drop it from synchronous code or from async code alike: removal runs on its own thread.
#[derive(Debug)]
pub struct Containers {
    addresses: Addresses,
    inner: Option<(tokio::runtime::Runtime, Running)>,
}

#[derive(Debug)]
struct Running {
    kafka: ContainerAsync<apache::Kafka>,
    mongo: ContainerAsync<Mongo>,
    postgres: ContainerAsync<Postgres>,
}

impl Containers {
    /// Where the services listen, for [`crate::services::run_services`].
    pub fn addresses(&self) -> Addresses {
        self.addresses.clone()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let Some((runtime, running)) = self.inner.take() else {
            return;
        };
        // testcontainers removes a container through the Tokio runtime it was started on. A thread
        // of its own keeps that working (and keeps the runtime's own shutdown legal) even when the
        // caller drops this inside someone else's async context.
        let removal = std::thread::spawn(move || {
            let ids = [
                running.kafka.id().to_owned(),
                running.mongo.id().to_owned(),
                running.postgres.id().to_owned(),
            ];
            let (kafka, mongo, postgres) = runtime.block_on(async move {
                tokio::join!(
                    running.kafka.rm(),
                    running.mongo.rm(),
                    running.postgres.rm()
                )
            });
            for (id, result) in ids.iter().zip([kafka, mongo, postgres]) {
                if let Err(e) = result {
                    eprintln!(
                        "warning: could not remove container {id} ({e}); `docker rm -f {id}`"
                    );
                }
            }
        });
        let _ = removal.join();
    }
}

/// Starts the three services, runs the scenario against them, then removes them.
///
/// `timeout` bounds the start of each container (see [`start`]); the run itself is bounded by
/// the scenario, as with `--backend services`.
pub fn run(
    scenario: &Scenario,
    seed: u64,
    options: &ServicesOptions,
    timeout: Duration,
    progress: Progress<'_>,
) -> Result<RunResult, SimError> {
    let containers = start(timeout).map_err(SimError::Backend)?;
    let result =
        crate::services::run_services(scenario, seed, &containers.addresses(), options, progress);
    drop(containers);
    result
}

/// Starts Kafka, MongoDB and PostgreSQL from their official images and waits until each is
/// ready.
///
/// Fails at once when there is no Docker engine ([`docker_available`]). Otherwise the three
/// start concurrently and each, pulling its image included, must be ready within `timeout`; the
/// error names every container that was not. Containers already up when another fails are
/// removed before this returns. Call it from synchronous code (it drives its own runtime).
pub fn start(timeout: Duration) -> Result<Containers, String> {
    docker_available()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(
            "simulator::containers::start drives its own Tokio runtime: call it from \
             synchronous code (e.g. inside spawn_blocking), not from async code"
                .into(),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("containers")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Tokio runtime for the containers: {e}"))?;
    let (running, addresses) = runtime.block_on(async {
        let running = start_all(timeout).await?;
        // On error `running` is dropped here, inside the runtime, which removes the containers.
        let addresses = addresses(&running).await?;
        Ok::<_, String>((running, addresses))
    })?;
    Ok(Containers {
        addresses,
        inner: Some((runtime, running)),
    })
}

async fn start_all(timeout: Duration) -> Result<Running, String> {
    let kafka = apache::Kafka::default()
        .with_jvm_image()
        .with_tag(KAFKA_IMAGE.1)
        // The module sets broker.id; Kafka 4 names the KRaft node by node.id (same value).
        .with_env_var("KAFKA_NODE_ID", "1")
        // As in docker-compose.yml: several partitions, single-node replication everywhere, no
        // rebalance delay, and a heap that fits next to MongoDB and PostgreSQL.
        .with_env_var("KAFKA_NUM_PARTITIONS", "4")
        .with_env_var("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")
        .with_env_var("KAFKA_DEFAULT_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var(
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
            "1",
        )
        .with_env_var("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env_var("KAFKA_HEAP_OPTS", "-Xmx512m -Xms256m");
    let mongo = Mongo::default().with_tag(MONGO_IMAGE.1);
    let postgres = Postgres::default()
        .with_db_name(POSTGRES_DB)
        .with_user(POSTGRES_USER)
        .with_password(POSTGRES_PASSWORD)
        .with_tag(POSTGRES_IMAGE.1);
    // Each start completes or times out on its own (no start is cancelled because another
    // failed), so every container created is either returned or removed.
    let (kafka, mongo, postgres) = tokio::join!(
        start_one("Kafka", KAFKA_IMAGE, kafka, timeout),
        start_one("MongoDB", MONGO_IMAGE, mongo, timeout),
        start_one("PostgreSQL", POSTGRES_IMAGE, postgres, timeout),
    );
    match (kafka, mongo, postgres) {
        (Ok(kafka), Ok(mongo), Ok(postgres)) => Ok(Running {
            kafka,
            mongo,
            postgres,
        }),
        (kafka, mongo, postgres) => {
            let errors: Vec<String> = [kafka.err(), mongo.err(), postgres.err()]
                .into_iter()
                .flatten()
                .collect();
            // The containers that did start are dropped here, inside the runtime: removed.
            Err(errors.join("; "))
        }
    }
}

async fn start_one<I: Image>(
    name: &str,
    (image, tag): (&str, &str),
    request: ContainerRequest<I>,
    timeout: Duration,
) -> Result<ContainerAsync<I>, String> {
    let request = request
        .with_label(LABEL.0, LABEL.1)
        .with_startup_timeout(timeout);
    // The outer bound covers pulling and creating too; testcontainers' own startup timeout covers
    // start and readiness and removes the container when it fires.
    match tokio::time::timeout(timeout, request.start()).await {
        Ok(Ok(container)) => Ok(container),
        Ok(Err(TestcontainersError::WaitContainer(e))) => Err(format!(
            "the {name} container ({image}:{tag}) was not ready within {} s ({e})",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!(
            "the {name} container ({image}:{tag}) did not start: {e}"
        )),
        Err(_) => Err(format!(
            "the {name} container ({image}:{tag}) was not ready within {} s, pulling the image \
             included; pull it beforehand (`docker pull {image}:{tag}`) or allow more time",
            timeout.as_secs()
        )),
    }
}

async fn addresses(running: &Running) -> Result<Addresses, String> {
    let host = running
        .kafka
        .get_host()
        .await
        .map_err(|e| format!("cannot tell where the Docker engine publishes ports: {e}"))?
        .to_string();
    if !is_local(&host) {
        return Err(format!(
            "the Docker engine publishes container ports on {host}, not on this machine; Kafka in \
             its container advertises 127.0.0.1, so the containers backend needs a local Docker \
             engine. {WAY_OUT}"
        ));
    }
    let port = |what: &str, e: TestcontainersError| format!("no host port for {what}: {e}");
    let kafka = running
        .kafka
        .get_host_port_ipv4(apache::KAFKA_PORT)
        .await
        .map_err(|e| port("Kafka", e))?;
    let mongo = running
        .mongo
        .get_host_port_ipv4(27017.tcp())
        .await
        .map_err(|e| port("MongoDB", e))?;
    let postgres = running
        .postgres
        .get_host_port_ipv4(5432.tcp())
        .await
        .map_err(|e| port("PostgreSQL", e))?;
    Ok(Addresses {
        // Must match the host part Kafka advertises (the module writes 127.0.0.1).
        kafka: format!("127.0.0.1:{kafka}"),
        mongodb_uri: format!("mongodb://127.0.0.1:{mongo}"),
        postgres_url: format!(
            "postgres://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{postgres}/{POSTGRES_DB}"
        ),
    })
}

fn is_local(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a Docker engine answers here, decided at once: `Ok` if one accepts a connection,
/// otherwise an error that says there is none and what to do instead.
///
/// Looks where testcontainers looks: `DOCKER_HOST` (`unix://` sockets; `tcp://` or `http://`
/// engines, given at most 2 s to accept a TCP connection), else `/var/run/docker.sock` and the
/// rootless Docker sockets under `$XDG_RUNTIME_DIR` and `$HOME`. Never pulls, never waits on
/// Docker itself.
pub fn docker_available() -> Result<(), String> {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let tls = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| v == "1");
    probe(&engine(docker_host.as_deref(), tls)?)
}

/// Where the Docker engine is expected to listen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Engine {
    /// A Unix socket.
    Unix(PathBuf),
    /// A plain TCP endpoint, `host:port`.
    Tcp(String),
}

fn no_engine(reason: impl std::fmt::Display) -> String {
    format!("no Docker engine here: {reason}, so no containers. {WAY_OUT}")
}

/// Resolves the engine's endpoint from `DOCKER_HOST` (and `DOCKER_TLS_VERIFY`) or the default
/// socket locations, without any I/O beyond checking that a socket file exists.
fn engine(docker_host: Option<&str>, tls_verify: bool) -> Result<Engine, String> {
    let Some(docker_host) = docker_host else {
        let candidates = default_sockets();
        return candidates
            .iter()
            .find(|p| p.exists())
            .map(|p| Engine::Unix(p.clone()))
            .ok_or_else(|| {
                let tried: Vec<String> =
                    candidates.iter().map(|p| p.display().to_string()).collect();
                no_engine(format_args!(
                    "DOCKER_HOST is unset and there is no Docker socket at {}",
                    tried.join(", ")
                ))
            });
    };
    let docker_host = docker_host.trim();
    if let Some(path) = docker_host.strip_prefix("unix://") {
        let path = Path::new(path);
        if path.exists() {
            Ok(Engine::Unix(path.to_owned()))
        } else {
            Err(no_engine(format_args!(
                "DOCKER_HOST={docker_host} but {} does not exist",
                path.display()
            )))
        }
    } else if let Some(rest) = docker_host
        .strip_prefix("tcp://")
        .or_else(|| docker_host.strip_prefix("http://"))
    {
        if tls_verify {
            return Err(no_engine(format_args!(
                "DOCKER_HOST={docker_host} with DOCKER_TLS_VERIFY=1 needs TLS, which this build \
                 does not include"
            )));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(no_engine(format_args!(
                "DOCKER_HOST={docker_host} names no host"
            )));
        }
        // Docker's plain-TCP port when none is given; `[v6]` alone has no port either.
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, _)| !host.is_empty() && !authority.ends_with(']'));
        Ok(Engine::Tcp(if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:2375")
        }))
    } else if docker_host.is_empty() {
        Err(no_engine("DOCKER_HOST is set but empty"))
    } else {
        Err(no_engine(format_args!(
            "DOCKER_HOST={docker_host} is not a unix:// socket or a tcp:// address, the only \
             kinds this build can reach"
        )))
    }
}

/// The sockets testcontainers tries, in its order, when `DOCKER_HOST` is unset.
fn default_sockets() -> Vec<PathBuf> {
    let mut sockets = vec![PathBuf::from(DEFAULT_SOCKET)];
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        sockets.push(Path::new(&dir).join(".docker/run/docker.sock"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        sockets.push(Path::new(&home).join(".docker/run/docker.sock"));
        sockets.push(Path::new(&home).join(".docker/desktop/docker.sock"));
    }
    sockets
}

/// Connects to the engine once, within [`PROBE_TIMEOUT`]: a socket file left behind by a stopped
/// daemon refuses at once, a TCP address gets at most the timeout (name resolution included).
fn probe(engine: &Engine) -> Result<(), String> {
    let (sender, receiver) = mpsc::channel();
    let target = match engine {
        Engine::Unix(path) => format!("unix://{}", path.display()),
        Engine::Tcp(address) => format!("tcp://{address}"),
    };
    let engine = engine.clone();
    // A thread, so that neither name resolution nor a full socket backlog can hold us past the
    // bound; if it outlives the bound it finishes on its own and its answer is dropped.
    std::thread::spawn(move || {
        let _ = sender.send(connect(&engine));
    });
    match receiver.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => Err(format!(
            "cannot reach the Docker engine at {target}: {e} (is your user allowed to use \
             Docker, e.g. in the `docker` group?). {WAY_OUT}"
        )),
        Ok(Err(e)) => Err(no_engine(format_args!("nothing answers at {target} ({e})"))),
        Err(_) => Err(no_engine(format_args!(
            "nothing answered at {target} within {} s",
            PROBE_TIMEOUT.as_secs()
        ))),
    }
}

fn connect(engine: &Engine) -> io::Result<()> {
    match engine {
        #[cfg(unix)]
        Engine::Unix(path) => std::os::unix::net::UnixStream::connect(path).map(drop),
        #[cfg(not(unix))]
        Engine::Unix(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Unix sockets are not available on this platform",
        )),
        Engine::Tcp(address) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to nothing");
            for address in address.to_socket_addrs()? {
                match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a `unix://` DOCKER_HOST naming a missing socket is "no Docker engine", with the way
    // out, before any connection is tried.
    #[test]
    fn missing_unix_socket_is_no_engine() {
        let e = engine(Some("unix:///nonexistent/docker.sock"), false).unwrap_err();
        assert!(e.contains("no Docker engine"), "{e}");
        assert!(e.contains("--backend services"), "{e}");
        assert!(e.contains("bash scripts/services.sh up"), "{e}");
        assert!(
            e.contains("eval \"$(bash scripts/services.sh env)\""),
            "{e}"
        );
    }

    // Proves tcp:// and http:// DOCKER_HOST values resolve to host:port, with Docker's default
    // port when none is given, and that TLS and unknown schemes are refused up front.
    #[test]
    fn docker_host_values_resolve() {
        let tcp = |s: &str| engine(Some(s), false);
        assert_eq!(
            tcp("tcp://127.0.0.1:2375"),
            Ok(Engine::Tcp("127.0.0.1:2375".into()))
        );
        assert_eq!(
            tcp("tcp://docker:2376/"),
            Ok(Engine::Tcp("docker:2376".into()))
        );
        assert_eq!(
            tcp("http://localhost"),
            Ok(Engine::Tcp("localhost:2375".into()))
        );
        assert_eq!(tcp("tcp://[::1]"), Ok(Engine::Tcp("[::1]:2375".into())));
        assert_eq!(
            tcp("tcp://[::1]:2375"),
            Ok(Engine::Tcp("[::1]:2375".into()))
        );
        assert!(engine(Some("tcp://127.0.0.1:2376"), true).is_err());
        assert!(
            tcp("ssh://me@docker")
                .unwrap_err()
                .contains("--backend services")
        );
        assert!(tcp("tcp://").is_err());
        assert!(tcp("").is_err());
    }

    // Proves the probe accepts a listening TCP endpoint and refuses a closed one quickly, with
    // the way out in the message.
    #[test]
    fn tcp_probe_tells_listening_from_closed() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert_eq!(probe(&Engine::Tcp(open)), Ok(()));
        drop(listener);
        // Port 1 on loopback: nothing listens there on a normal machine, refused at once.
        let e = probe(&Engine::Tcp("127.0.0.1:1".into())).unwrap_err();
        assert!(e.contains("no Docker engine"), "{e}");
        assert!(e.contains("--backend services"), "{e}");
    }

    // Proves a socket file that nothing listens on (a stopped daemon's leftover) is no engine.
    #[cfg(unix)]
    #[test]
    fn stale_unix_socket_is_no_engine() {
        let dir = std::env::temp_dir().join(format!("containers-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert_eq!(probe(&Engine::Unix(path.clone())), Ok(()));
        drop(listener); // the file stays, nobody listens
        let e = probe(&Engine::Unix(path)).unwrap_err();
        assert!(e.contains("no Docker engine"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    // Proves only loopback hosts count as local (Kafka advertises 127.0.0.1).
    #[test]
    fn local_hosts() {
        assert!(is_local("localhost"));
        assert!(is_local("127.0.0.1"));
        assert!(is_local("[::1]"));
        assert!(!is_local("172.17.0.1"));
        assert!(!is_local("docker.example"));
    }
}
