//! The scenario knobs do what they say, only where they say, and the clean data is physically
//! plausible through the day.

use std::collections::BTreeMap;

use generator::{CongestionEntry, DemandEntry, Generator, GeneratorConfig, Record};
use pipeline::model::{Message, Topic};
use pipeline::time::{HOUR_MS, Millis};
use proptest::prelude::*;

/// 2026-11-24T00:00:00Z.
const DAY0: Millis = 1_795_478_400_000;

fn at(hour: i64, minute: i64) -> String {
    pipeline::time::format_rfc3339(DAY0 + hour * HOUR_MS + minute * 60_000)
}

fn value_bytes(r: &Record<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    r.write_value(&mut v);
    v
}

/// Records keyed by (key, event time) → value bytes.
fn by_key_and_time(
    g: &Generator,
    keep: impl Fn(&Record<'_>) -> bool,
) -> BTreeMap<(String, i64), Vec<u8>> {
    g.records()
        .filter(|r| keep(r))
        .map(|r| ((r.key.to_string(), r.event_time_ms), value_bytes(&r)))
        .collect()
}

// Proves a severe congestion knob gives readings below 5 km/h in its zone and time range, none
// anywhere else or at any other time, and leaves every other traffic and parking reading
// byte-identical.
#[test]
fn severe_congestion_only_where_forced() {
    let base = GeneratorConfig {
        start: at(7, 30),
        duration_s: 3600,
        ..GeneratorConfig::default()
    };
    let forced = GeneratorConfig {
        congestion: vec![CongestionEntry {
            zone: "zone-2".into(),
            from: Some("08:00".into()),
            to: Some("08:20".into()),
            speed_kmh: 3.0,
        }],
        ..base.clone()
    };
    let g = Generator::new(&forced, 21).unwrap();
    let (from, to) = (DAY0 + 8 * HOUR_MS, DAY0 + 8 * HOUR_MS + 20 * 60_000);
    let mut severe = 0;
    for r in g.records() {
        if let Some(Message::Traffic(m)) = r.message() {
            let inside = m.zone_id == "zone-2" && (from..to).contains(&r.event_time_ms);
            assert_eq!(m.speed_kmh < 5.0, inside, "{m:?}");
            if inside {
                severe += 1;
                assert!(m.speed_kmh >= 0.0 && m.occupancy_percent > 85.0, "{m:?}");
            }
        }
    }
    // zone-2 has 3 thesis sensors: 3 × 12 ticks × 20 minutes.
    assert_eq!(severe, 3 * 12 * 20);

    let unforced = Generator::new(&base, 21).unwrap();
    let untouched = |r: &Record<'_>| match r.message() {
        Some(Message::Traffic(m)) => {
            m.zone_id != "zone-2" || !(from..to).contains(&r.event_time_ms)
        }
        Some(Message::Parking(_)) => true,
        _ => false,
    };
    let a = by_key_and_time(&g, untouched);
    let b = by_key_and_time(&unforced, untouched);
    assert_eq!(a.len(), b.len());
    assert!(
        a == b,
        "a congestion knob changed readings outside its zone and range"
    );
}

// Proves a zone demand knob raises density in that zone only.
#[test]
fn demand_knob_is_local() {
    let base = GeneratorConfig {
        start: at(10, 0),
        duration_s: 900,
        ..GeneratorConfig::default()
    };
    let event = GeneratorConfig {
        demand: vec![DemandEntry {
            zone: Some("zone-3".into()),
            from: None,
            to: None,
            multiplier: 1.8,
        }],
        ..base.clone()
    };
    let mean_speed = |config: &GeneratorConfig, zone: &str| {
        let g = Generator::new(config, 4).unwrap();
        let speeds: Vec<f64> = g
            .records()
            .filter_map(|r| match r.message() {
                Some(Message::Traffic(m)) if m.zone_id == zone => Some(m.speed_kmh),
                _ => None,
            })
            .collect();
        speeds.iter().sum::<f64>() / speeds.len() as f64
    };
    assert!(mean_speed(&event, "zone-3") < mean_speed(&base, "zone-3") - 10.0);
    assert_eq!(mean_speed(&event, "zone-1"), mean_speed(&base, "zone-1"));
}

// Proves adding devices (load factor 2) leaves every record of the thesis devices, and every
// incident, byte-identical, and doubles the offered load.
#[test]
fn load_factor_keeps_original_devices() {
    let one = GeneratorConfig {
        duration_s: 900,
        ..GeneratorConfig::default()
    };
    let two = GeneratorConfig {
        load_factor: 2,
        ..one.clone()
    };
    let g1 = Generator::new(&one, 5).unwrap();
    let g2 = Generator::new(&two, 5).unwrap();
    assert_eq!(g2.offered_messages_per_minute(), 2.0 * 792.0);
    assert_eq!(g2.city().sensors.len(), 42);
    let originals: std::collections::BTreeSet<String> =
        g1.records().map(|r| r.key.to_string()).collect();
    let a = by_key_and_time(&g1, |_| true);
    let b = by_key_and_time(&g2, |r| originals.contains(r.key.as_ref()));
    assert_eq!(
        a.len(),
        66 * 12 * 15 + a.keys().filter(|k| k.0.starts_with("INC-")).count()
    );
    assert!(
        a == b,
        "load factor 2 changed the records of the thesis devices"
    );
}

/// Mean traffic speed and occupancy, mobility index, mean bus delay, share of bus reports above
/// 90 %, mean bus occupancy, mean parking occupancy, over one hour from `hour`.
#[derive(Debug)]
struct HourStats {
    speed: f64,
    occupancy: f64,
    mobility: f64,
    delay: f64,
    overcrowded: f64,
    bus_load: f64,
    parking: f64,
    min_speed: f64,
    max_occupancy: f64,
}

fn hour_stats(hour: i64, seed: u64) -> HourStats {
    let config = GeneratorConfig {
        start: at(hour, 0),
        duration_s: 3600,
        ..GeneratorConfig::default()
    };
    let g = Generator::new(&config, seed).unwrap();
    let (mut n, mut speed, mut occ, mut min_speed, mut max_occ) =
        (0.0, 0.0, 0.0, f64::MAX, 0.0_f64);
    let (mut nb, mut delay, mut over, mut load) = (0.0, 0.0, 0.0, 0.0);
    let (mut np, mut parking) = (0.0, 0.0);
    for r in g.records() {
        match r.message() {
            Some(Message::Traffic(m)) => {
                n += 1.0;
                speed += m.speed_kmh;
                occ += m.occupancy_percent;
                min_speed = min_speed.min(m.speed_kmh);
                max_occ = max_occ.max(m.occupancy_percent);
            }
            Some(Message::Transport(m)) => {
                nb += 1.0;
                delay += m.delay_minutes;
                load += m.occupancy_rate;
                over += f64::from(u8::from(m.occupancy_rate > 90.0));
            }
            Some(Message::Parking(m)) => {
                np += 1.0;
                parking += m.occupancy_rate;
            }
            _ => {}
        }
    }
    let (speed, occupancy) = (speed / n, occ / n);
    HourStats {
        speed,
        occupancy,
        mobility: (speed / 50.0 * 0.6 + (100.0 - occupancy) / 100.0 * 0.4) * 100.0,
        delay: delay / nb,
        overcrowded: over / nb,
        bus_load: load / nb,
        parking: parking / np,
        min_speed,
        max_occupancy: max_occ,
    }
}

// Proves the daily rhythm: peaks slow and fill the city (mobility `poor`), ordinary hours are
// `good`, night is `excellent`; buses run late and full at the peaks and near empty at night;
// parking is emptier at night than at midday.
#[test]
fn plausible_day() {
    let night = hour_stats(2, 9);
    let morning_peak = hour_stats(7, 9);
    let ordinary = hour_stats(10, 9);
    let evening_peak = hour_stats(17, 9);
    let midday = hour_stats(12, 9);
    let report = format!(
        "night {night:?}\nam {morning_peak:?}\n10h {ordinary:?}\npm {evening_peak:?}\nnoon {midday:?}"
    );

    for peak in [&morning_peak, &evening_peak] {
        assert!((12.0..=18.0).contains(&peak.speed), "{report}");
        assert!((70.0..=80.0).contains(&peak.occupancy), "{report}");
        assert!(
            peak.mobility > 20.0 && peak.mobility <= 40.0,
            "peaks must be `poor`\n{report}"
        );
        assert!((3.0..=6.0).contains(&peak.delay), "{report}");
        assert!(
            peak.overcrowded > 0.0,
            "central lines exceed 90 % at the peaks\n{report}"
        );
        assert!(peak.speed < ordinary.speed, "{report}");
    }
    assert!((35.0..=40.0).contains(&ordinary.speed), "{report}");
    assert!((35.0..=45.0).contains(&ordinary.occupancy), "{report}");
    assert!(
        ordinary.mobility > 60.0 && ordinary.mobility <= 80.0,
        "10 h must be `good`\n{report}"
    );
    assert!(
        ordinary.delay < 1.5 && ordinary.overcrowded == 0.0,
        "{report}"
    );
    assert!(
        night.speed >= 50.0 && night.occupancy <= 15.0 && night.mobility > 80.0,
        "{report}"
    );
    assert!(night.bus_load < 15.0 && night.delay < 0.5, "{report}");
    assert!(night.parking < midday.parking - 50.0, "{report}");
    for h in [&night, &morning_peak, &ordinary, &evening_peak, &midday] {
        assert!(h.min_speed >= 6.0 && h.max_occupancy <= 95.0, "{report}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    // Proves that without forced congestion no reading is ever below 5 km/h nor above 95 %
    // occupancy, however high the demand.
    #[test]
    fn natural_readings_stay_in_bounds(seed in any::<u64>(), multiplier in 0.0f64..10.0, hour in 0i64..24) {
        let config = GeneratorConfig {
            start: at(hour, 0),
            duration_s: 600,
            demand: vec![DemandEntry { zone: None, from: None, to: None, multiplier }],
            ..GeneratorConfig::default()
        };
        let g = Generator::new(&config, seed).unwrap();
        for r in g.records() {
            if let Some(Message::Traffic(m)) = r.message() {
                prop_assert!(m.speed_kmh >= 5.0 && m.occupancy_percent <= 95.0,
                    "seed {} multiplier {} hour {}: {:?}", seed, multiplier, hour, m);
                prop_assert!(m.vehicle_flow >= 0 && m.occupancy_percent >= 0.0);
            }
            if let Some(Message::Transport(m)) = r.message() {
                prop_assert!((0.0..=100.0).contains(&m.occupancy_rate) && m.delay_minutes >= 0.0);
            }
            if let Some(Message::Parking(m)) = r.message() {
                prop_assert!(m.available_spaces >= 0 && m.available_spaces == m.total_spaces - m.occupied_spaces);
                prop_assert_eq!(m.status.as_ref(), if m.available_spaces == 0 { "full" } else { "open" });
            }
            prop_assert!(r.topic != Topic::Incidents || r.key.starts_with("INC-"));
        }
    }
}
