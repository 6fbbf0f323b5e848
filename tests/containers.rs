//! The containers backend: without a Docker engine it fails fast and names the way out; with
//! one it starts Kafka, MongoDB and PostgreSQL and every address answers.
//!
//! Runs with `--features services` (which builds the simulator's `containers` backend).
#![cfg(feature = "services")]

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use simulator::containers;

/// The host:port inside a `scheme://[user:pass@]host:port[/path]` URL, or a bare `host:port`.
fn host_port(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Connects to `address` once, within 10 s.
fn answers(address: &str) -> Result<(), String> {
    let target = host_port(address);
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| format!("{target}: {e}"))?
        .collect();
    let mut last = format!("{target} resolves to nothing");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(last)
}

// Proves that `start` either fails within 5 s naming `--backend services` (no Docker engine,
// as here and in CI), or starts the three services and each published address accepts a
// connection (a Docker engine is present).
#[test]
#[allow(clippy::disallowed_methods)] // Measures how fast `start` fails; nothing else reads it.
fn start_fails_fast_without_docker_or_serves_every_address() {
    match containers::docker_available() {
        Err(reason) => {
            assert!(reason.contains("--backend services"), "{reason}");
            let began = Instant::now();
            let outcome = containers::start(Duration::from_secs(120));
            let took = began.elapsed();
            let Err(e) = outcome else {
                panic!("start succeeded although docker_available said: {reason}");
            };
            assert!(
                took < Duration::from_secs(5),
                "start took {took:?} to fail: {e}"
            );
            assert!(e.contains("no Docker engine"), "{e}");
            assert!(e.contains("--backend services"), "{e}");
            assert!(e.contains("bash scripts/services.sh up"), "{e}");
            assert!(
                e.contains("eval \"$(bash scripts/services.sh env)\""),
                "{e}"
            );
        }
        Ok(()) => {
            let running = containers::start(containers::DEFAULT_START_TIMEOUT)
                .unwrap_or_else(|e| panic!("a Docker engine answers but start failed: {e}"));
            let addresses = running.addresses();
            assert!(addresses.kafka.starts_with("127.0.0.1:"), "{addresses:?}");
            assert!(
                addresses.mongodb_uri.starts_with("mongodb://127.0.0.1:"),
                "{addresses:?}"
            );
            assert!(
                addresses.postgres_url.starts_with("postgres://")
                    && addresses.postgres_url.ends_with("/smart_city"),
                "{addresses:?}"
            );
            for (name, address) in [
                ("Kafka", &addresses.kafka),
                ("MongoDB", &addresses.mongodb_uri),
                ("PostgreSQL", &addresses.postgres_url),
            ] {
                if let Err(e) = answers(address) {
                    panic!("{name} at {address} does not answer: {e}");
                }
            }
            drop(running);
            // Removed on drop: the published ports stop answering.
            assert!(
                answers(&addresses.postgres_url).is_err(),
                "PostgreSQL still answers at {} after the containers were dropped",
                addresses.postgres_url
            );
        }
    }
}

// Proves `simulator run --backend containers` without a Docker engine stops at once with an
// error that says to use the services backend, instead of hanging on a missing engine.
#[test]
fn containers_backend_without_docker_says_use_services() {
    if containers::docker_available().is_ok() {
        eprintln!("a Docker engine is present: the failure path does not apply");
        return;
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/thesis_baseline.toml");
    let options = simulator::RunOptions {
        backend: Some(simulator::Backend::Containers),
        ..Default::default()
    };
    match simulator::run_file(&path, &options) {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("no Docker engine") && e.contains("--backend services"),
                "{e}"
            );
        }
        Ok(r) => panic!(
            "the containers backend ran without a Docker engine: {}",
            r.summary()
        ),
    }
}

// Proves the address parsing the test relies on.
#[test]
fn host_port_of_each_address_form() {
    assert_eq!(host_port("127.0.0.1:9092"), "127.0.0.1:9092");
    assert_eq!(host_port("mongodb://127.0.0.1:27017"), "127.0.0.1:27017");
    assert_eq!(
        host_port("postgres://u:p@127.0.0.1:5432/smart_city"),
        "127.0.0.1:5432"
    );
}
