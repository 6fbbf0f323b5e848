//! A steady load for the real streaming job: the thesis city (21 traffic sensors, 33 buses,
//! 12 car parks, one reading each per 5 s tick = 792 messages/minute, plus incidents every 30 s
//! with probability 0.3), multiplied by `--scale`, produced to Kafka in real time with event
//! time = now. A few readings trip the alerts (speed < 5 km/h, buses over 90 % full, high and
//! critical incidents), so alert latency can be measured.
//!
//! ```text
//! cargo run --release --features services --example load -- --scale 1 --seconds 180
//! ```
//!
//! Flags: `--scale K` (K times the thesis city), `--seconds S`, `--prefix P` (topic prefix),
//! `--bootstrap HOST:PORT` (default `KAFKA_BOOTSTRAP_SERVERS` or 127.0.0.1:9092).

use std::time::Duration;

use pipeline::streaming::WallClock;
use pipeline::time::format_rfc3339;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// A small deterministic generator (xorshift64*), seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn message(rng: &mut Rng, slot: usize, now: i64) -> (&'static str, String, String) {
    let ts = format_rfc3339(now);
    let per_city = 66;
    let city = slot / per_city;
    let i = slot % per_city;
    if i < 21 {
        let zone = i % 5;
        let road = i % 5;
        let speed = if rng.unit() < 0.02 {
            2.0 + rng.unit() * 2.5
        } else {
            15.0 + rng.unit() * 45.0
        };
        let occ = 10.0 + rng.unit() * 70.0;
        let id = format!("TS-{city:04}-{i:03}");
        let v = format!(
            r#"{{"sensor_id":"{id}","timestamp":"{ts}","road_id":"R{road}","road_name":"Road {road}","zone_id":"Z{zone}","location":{{"lat":40.4,"lon":-3.7}},"speed_kmh":{speed:.2},"vehicle_flow":{},"occupancy_percent":{occ:.2},"congestion_level":"medium","data_quality":"good"}}"#,
            (rng.unit() * 40.0) as i64
        );
        ("traffic-sensors", id, v)
    } else if i < 54 {
        let b = i - 21;
        let occ = if rng.unit() < 0.03 {
            91.0 + rng.unit() * 8.0
        } else {
            rng.unit() * 85.0
        };
        let id = format!("BUS-{city:04}-{b:02}");
        let v = format!(
            r#"{{"vehicle_id":"{id}","timestamp":"{ts}","line_id":"L{}","line_number":"{}","current_stop":"A","next_stop":"B","direction":"outbound","location":{{"lat":40.4,"lon":-3.7}},"speed_kmh":20.0,"passenger_count":{},"capacity":80,"occupancy_rate":{occ:.2},"delay_minutes":{:.2},"status":"on_time"}}"#,
            b % 8,
            b % 8,
            (occ * 0.8) as i64,
            rng.unit() * 6.0
        );
        ("public-transport", id, v)
    } else {
        let p = i - 54;
        let occ = rng.unit() * 100.0;
        let occupied = (occ * 2.0) as i64;
        let id = format!("P-{city:04}-{p:02}");
        let v = format!(
            r#"{{"parking_id":"{id}","timestamp":"{ts}","name":"Lot","zone_id":"Z{}","type":"garage","location":{{"lat":40.4,"lon":-3.7}},"total_spaces":200,"occupied_spaces":{occupied},"available_spaces":{},"occupancy_rate":{occ:.2},"hourly_rate":2.5,"status":"open"}}"#,
            p % 5,
            200 - occupied
        );
        ("parking", id, v)
    }
}

#[tokio::main]
async fn main() {
    let scale: usize = arg("--scale").and_then(|s| s.parse().ok()).unwrap_or(1);
    let seconds: i64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(180);
    let prefix = arg("--prefix").unwrap_or_default();
    let bootstrap = arg("--bootstrap")
        .or_else(|| std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok())
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("a Kafka producer");
    let clock = WallClock;
    let start = clock.now_ms();
    let per_tick = 66 * scale;
    let tick_ms = 5_000i64;
    let mut rng = Rng(0x5EED_0000_0000_0001);
    let mut sent = 0u64;
    let mut failed = 0u64;
    let mut incidents = 0u64;
    let mut next_incident = start + 30_000;
    let mut last_report = start;
    let mut deliveries = Vec::new();
    loop {
        let now = clock.now_ms();
        let elapsed = now - start;
        if elapsed >= seconds * 1000 {
            break;
        }
        // Spread each tick's readings evenly over the tick.
        let due = (elapsed as u128 * per_tick as u128 / tick_ms as u128) as u64;
        while sent < due {
            let slot = (sent % per_tick as u64) as usize;
            let (topic, key, value) = message(&mut rng, slot, clock.now_ms());
            let topic = format!("{prefix}{topic}");
            let record = FutureRecord::to(&topic).key(&key).payload(&value);
            match producer.send_result(record) {
                Ok(d) => deliveries.push(d),
                Err(_) => failed += 1,
            }
            sent += 1;
        }
        if now >= next_incident {
            next_incident += 30_000;
            for c in 0..scale {
                if rng.unit() < 0.3 {
                    incidents += 1;
                    let sev = ["low", "medium", "high", "critical"][(rng.next() % 4) as usize];
                    let id = format!("INC-{c:04}-{incidents:06}");
                    let v = format!(
                        r#"{{"incident_id":"{id}","timestamp":"{}","type":"accident","severity":"{sev}","location":{{"road_id":"R1","road_name":"Road 1","zone_id":"Z{}","lat":40.4,"lon":-3.7}},"description":"crash","estimated_duration_min":30,"affected_lanes":1,"status":"active"}}"#,
                        format_rfc3339(clock.now_ms()),
                        c % 5
                    );
                    let topic = format!("{prefix}incidents");
                    if let Ok(d) =
                        producer.send_result(FutureRecord::to(&topic).key(&id).payload(&v))
                    {
                        deliveries.push(d);
                    }
                }
            }
        }
        if deliveries.len() > 100_000 {
            for d in deliveries.drain(..) {
                if !matches!(d.await, Ok(Ok(_))) {
                    failed += 1;
                }
            }
        }
        if now - last_report >= 10_000 {
            last_report = now;
            eprintln!(
                "load: {sent} readings + {incidents} incidents in {:.0} s = {:.1} msg/s ({failed} failed)",
                elapsed as f64 / 1000.0,
                sent as f64 * 1000.0 / elapsed.max(1) as f64
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for d in deliveries {
        if !matches!(d.await, Ok(Ok(_))) {
            failed += 1;
        }
    }
    let _ = producer.flush(Duration::from_secs(30));
    let elapsed = clock.now_ms() - start;
    eprintln!(
        "load: done: {sent} readings + {incidents} incidents in {:.1} s = {:.1} msg/s ({failed} failed)",
        elapsed as f64 / 1000.0,
        sent as f64 * 1000.0 / elapsed.max(1) as f64
    );
}
