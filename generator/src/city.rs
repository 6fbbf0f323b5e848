//! The city: zones, roads, bus lines, and the devices that report on them.
//!
//! [`City::thesis`] builds the thesis city — 5 zones, 5 roads, 21 traffic sensors, 8 bus lines
//! with 33 buses, 12 parking lots — multiplied by a load factor. The city is a pure function of
//! the load factor (the seed does not change it), so a caller can list devices and ids before
//! generating anything. Extra devices of a load factor above 1 get new ids after the thesis ones
//! and copy the road, line or zone of a thesis device, so the thesis devices keep their ids,
//! places and (because streams are named by id) their data.
//!
//! Names are ASCII so that any byte prefix of a message is still valid UTF-8 (the malformed-JSON
//! fault truncates messages at arbitrary bytes).

use pipeline::model::GeoPoint;

/// A district of the city.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// `zone-1` ... `zone-5`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Centre of the district.
    pub center: GeoPoint,
}

/// A straight arterial road crossing one or more zones.
#[derive(Clone, Debug, PartialEq)]
pub struct Road {
    /// `road-1` ... `road-5`.
    pub id: String,
    /// Human name, written in every reading.
    pub name: String,
    /// Zones the road crosses, in order from `from` to `to`, each over an equal share of it.
    pub zones: Vec<usize>,
    /// One end.
    pub from: GeoPoint,
    /// The other end.
    pub to: GeoPoint,
    /// Greenshields free-flow speed, km/h.
    pub free_speed_kmh: f64,
    /// Lanes counted by a sensor (both directions).
    pub lanes: u32,
    /// How much busier than the city average the road is (1.0 = average).
    pub demand_factor: f64,
}

impl Road {
    /// The point at `fraction` (0..1) of the way from `from` to `to`.
    pub fn point_at(&self, fraction: f64) -> GeoPoint {
        lerp(self.from, self.to, fraction)
    }

    /// The zone at `fraction` (0..1) of the way from `from` to `to`.
    pub fn zone_at(&self, fraction: f64) -> usize {
        let i = (fraction * self.zones.len() as f64) as usize;
        self.zones[i.min(self.zones.len() - 1)]
    }
}

/// A bus stop.
#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    /// Stop name.
    pub name: String,
    /// Position.
    pub location: GeoPoint,
    /// Zone the stop is in.
    pub zone: usize,
}

/// A bus line: stops in outbound order.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// `line-1` ... `line-8`.
    pub id: String,
    /// Public number, `L1` ... `L8`.
    pub number: String,
    /// Express line run with articulated buses.
    pub express: bool,
    /// Runs through the centre; its buses fill beyond 90 % at the peaks.
    pub central: bool,
    /// Passengers per bus: 100 on express lines, 60 otherwise.
    pub capacity: u32,
    /// Stops from the outbound terminal to the inbound terminal.
    pub stops: Vec<Stop>,
    /// Distance from the first stop to each stop, km (`cum_km[0] == 0`).
    pub cum_km: Vec<f64>,
}

impl Line {
    /// Route length, km.
    pub fn length_km(&self) -> f64 {
        self.cum_km.last().copied().unwrap_or(0.0)
    }
}

/// A traffic sensor (inductive loop) on a road.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSensor {
    /// `TS-001` ...
    pub id: String,
    /// Index into [`City::roads`].
    pub road: usize,
    /// Index into [`City::zones`].
    pub zone: usize,
    /// Position.
    pub location: GeoPoint,
}

/// A bus serving a line.
#[derive(Clone, Debug, PartialEq)]
pub struct Bus {
    /// `BUS-001` ...
    pub id: String,
    /// Index into [`City::lines`].
    pub line: usize,
    /// Where the bus is at the start, as a fraction of the route length from the first stop.
    pub start_fraction: f64,
    /// Whether the bus starts outbound (towards the last stop).
    pub start_outbound: bool,
}

/// Kind of car park.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParkingKind {
    /// Metered kerbside spaces.
    Street,
    /// A multi-storey or underground garage.
    Garage,
    /// An open-air lot.
    Surface,
}

impl ParkingKind {
    /// The wire name (`type` field).
    pub const fn name(self) -> &'static str {
        match self {
            ParkingKind::Street => "street",
            ParkingKind::Garage => "garage",
            ParkingKind::Surface => "surface",
        }
    }
}

/// A car park.
#[derive(Clone, Debug, PartialEq)]
pub struct ParkingLot {
    /// `PK-001` ...
    pub id: String,
    /// Human name.
    pub name: String,
    /// Index into [`City::zones`].
    pub zone: usize,
    /// Kind.
    pub kind: ParkingKind,
    /// Position.
    pub location: GeoPoint,
    /// Spaces.
    pub total_spaces: u32,
    /// Price per hour, fixed per lot.
    pub hourly_rate: f64,
    /// How full the lot runs relative to the city curve (1.0 = average).
    pub demand_factor: f64,
}

/// A device of any kind, by index into its kind's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeviceRef {
    /// Index into [`City::sensors`].
    Sensor(usize),
    /// Index into [`City::buses`].
    Bus(usize),
    /// Index into [`City::lots`].
    Lot(usize),
}

/// The whole city, read-only once built.
#[derive(Clone, Debug, PartialEq)]
pub struct City {
    /// Districts.
    pub zones: Vec<Zone>,
    /// Arterial roads.
    pub roads: Vec<Road>,
    /// Bus lines.
    pub lines: Vec<Line>,
    /// Traffic sensors (`traffic-sensors` topic).
    pub sensors: Vec<TrafficSensor>,
    /// Buses (`public-transport` topic).
    pub buses: Vec<Bus>,
    /// Car parks (`parking` topic).
    pub lots: Vec<ParkingLot>,
}

/// Thesis sensors per road (21 in all).
const SENSORS_PER_ROAD: [usize; 5] = [5, 5, 4, 4, 3];
/// Thesis buses per line (33 in all).
const BUSES_PER_LINE: [usize; 8] = [6, 5, 4, 4, 4, 4, 3, 3];

const fn p(lat: f64, lon: f64) -> GeoPoint {
    GeoPoint { lat, lon }
}

fn lerp(a: GeoPoint, b: GeoPoint, f: f64) -> GeoPoint {
    p(a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f)
}

/// Kilometres between two nearby points (equirectangular: exact enough inside a city).
fn distance_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let mean_lat = ((a.lat + b.lat) / 2.0).to_radians();
    let dx = (b.lon - a.lon) * 111.32 * mean_lat.cos();
    let dy = (b.lat - a.lat) * 110.57;
    (dx * dx + dy * dy).sqrt()
}

/// Rounds coordinates to 5 decimals (about a metre) so the JSON stays short.
fn round5(g: GeoPoint) -> GeoPoint {
    p((g.lat * 1e5).round() / 1e5, (g.lon * 1e5).round() / 1e5)
}

impl City {
    /// The thesis city with every kind of device multiplied by `load_factor` (at least 1).
    pub fn thesis(load_factor: u32) -> City {
        let factor = load_factor.max(1) as usize;
        let zones = thesis_zones();
        let roads = thesis_roads();
        let lines = thesis_lines();
        let base_lots = thesis_lots();

        // Thesis sensors: spread evenly along each road, the zone read off the position.
        let mut base_sensors = Vec::with_capacity(21);
        for (r, &n) in SENSORS_PER_ROAD.iter().enumerate() {
            for k in 0..n {
                base_sensors.push((r, (k as f64 + 0.5) / n as f64, n));
            }
        }
        let mut sensors = Vec::with_capacity(base_sensors.len() * factor);
        for i in 0..base_sensors.len() * factor {
            let (road, base_fraction, n) = base_sensors[i % base_sensors.len()];
            let copy = i / base_sensors.len();
            // Copies sit at other points of the same stretch of road (golden-ratio spacing keeps
            // them apart for any number of copies), never beyond the stretch.
            let shift = if copy == 0 {
                0.0
            } else {
                ((copy as f64 * 0.618_034).fract() - 0.5) * 0.9
            };
            let fraction = base_fraction + shift / n as f64;
            let road_ref = &roads[road];
            sensors.push(TrafficSensor {
                id: format!("TS-{:03}", i + 1),
                road,
                zone: road_ref.zone_at(fraction),
                location: round5(road_ref.point_at(fraction)),
            });
        }

        let mut base_buses = Vec::with_capacity(33);
        for (l, &n) in BUSES_PER_LINE.iter().enumerate() {
            for j in 0..n {
                base_buses.push((l, j, n));
            }
        }
        let mut buses = Vec::with_capacity(base_buses.len() * factor);
        for i in 0..base_buses.len() * factor {
            let (line, j, n) = base_buses[i % base_buses.len()];
            let copy = i / base_buses.len();
            let fraction =
                ((j as f64 + 0.5) / n as f64 + copy as f64 * 0.618_034 / n as f64).fract();
            buses.push(Bus {
                id: format!("BUS-{:03}", i + 1),
                line,
                start_fraction: fraction,
                start_outbound: (j + copy) % 2 == 0,
            });
        }

        let mut lots = Vec::with_capacity(base_lots.len() * factor);
        for i in 0..base_lots.len() * factor {
            let base = &base_lots[i % base_lots.len()];
            let copy = i / base_lots.len();
            let mut lot = base.clone();
            lot.id = format!("PK-{:03}", i + 1);
            if copy > 0 {
                lot.name = format!("{} {}", base.name, copy + 1);
                let a = copy as f64 * 2.399_963; // golden angle, radians
                lot.location = round5(p(
                    base.location.lat + 0.0015 * a.sin() * (1.0 + (copy % 3) as f64),
                    base.location.lon + 0.0020 * a.cos() * (1.0 + (copy % 3) as f64),
                ));
            }
            lots.push(lot);
        }

        City {
            zones,
            roads,
            lines,
            sensors,
            buses,
            lots,
        }
    }

    /// Devices of the three counted topics.
    pub fn device_count(&self) -> usize {
        self.sensors.len() + self.buses.len() + self.lots.len()
    }

    /// The index of zone `id`.
    pub fn zone_index(&self, id: &str) -> Option<usize> {
        self.zones.iter().position(|z| z.id == id)
    }

    /// The index of line `id`.
    pub fn line_index(&self, id: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.id == id)
    }

    /// The device whose id (the Kafka key) is `id`.
    pub fn device(&self, id: &str) -> Option<DeviceRef> {
        // Ids are numbered, so parse the number rather than scan 10^4 strings.
        let (list_len, make): (usize, fn(usize) -> DeviceRef) = if id.starts_with("TS-") {
            (self.sensors.len(), DeviceRef::Sensor)
        } else if id.starts_with("BUS-") {
            (self.buses.len(), DeviceRef::Bus)
        } else if id.starts_with("PK-") {
            (self.lots.len(), DeviceRef::Lot)
        } else {
            return None;
        };
        let digits = &id[id.find('-')? + 1..];
        let n: usize = digits.parse().ok()?;
        let index = n.checked_sub(1)?;
        (index < list_len && self.device_id(make(index)) == id).then(|| make(index))
    }

    /// The id of a device.
    pub fn device_id(&self, device: DeviceRef) -> &str {
        match device {
            DeviceRef::Sensor(i) => &self.sensors[i].id,
            DeviceRef::Bus(i) => &self.buses[i].id,
            DeviceRef::Lot(i) => &self.lots[i].id,
        }
    }
}

fn thesis_zones() -> Vec<Zone> {
    [
        ("Centro", p(40.4168, -3.7038)),
        ("Chamartin", p(40.4600, -3.6900)),
        ("Arganzuela-Usera", p(40.3900, -3.7000)),
        ("Salamanca-Ventas", p(40.4300, -3.6600)),
        ("Moncloa-Latina", p(40.4100, -3.7400)),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, center))| Zone {
        id: format!("zone-{}", i + 1),
        name: name.to_owned(),
        center,
    })
    .collect()
}

/// A road: (name, zones from one end to the other, ends, free speed km/h, lanes, demand factor).
type RoadRow = (
    &'static str,
    &'static [usize],
    GeoPoint,
    GeoPoint,
    f64,
    u32,
    f64,
);

/// The central streets are slower and busier; the radial avenues faster.
#[rustfmt::skip]
const ROADS: [RoadRow; 5] = [
    ("Gran Via", &[0], p(40.4200, -3.7120), p(40.4195, -3.6970), 50.0, 2, 1.06),
    ("Paseo de la Castellana", &[0, 1], p(40.4250, -3.6910), p(40.4700, -3.6880), 70.0, 4, 1.0),
    ("Calle de Alcala", &[0, 3], p(40.4180, -3.7000), p(40.4320, -3.6500), 55.0, 3, 1.03),
    ("Paseo de Extremadura", &[4], p(40.4110, -3.7250), p(40.4050, -3.7600), 65.0, 3, 0.93),
    ("Avenida de Andalucia", &[2], p(40.3950, -3.6980), p(40.3650, -3.7000), 60.0, 3, 0.96),
];

fn thesis_roads() -> Vec<Road> {
    ROADS
        .iter()
        .enumerate()
        .map(|(i, &(name, zones, from, to, v, lanes, demand))| Road {
            id: format!("road-{}", i + 1),
            name: name.to_owned(),
            zones: zones.to_vec(),
            from,
            to,
            free_speed_kmh: v,
            lanes,
            demand_factor: demand,
        })
        .collect()
}

/// A stop: (name, zone index, lat, lon).
type StopRow = (&'static str, usize, f64, f64);

/// The lines: (express, central, stops in outbound order). Express lines run articulated buses
/// (capacity 100); central lines cross the centre and fill beyond 90 % at the peaks.
#[rustfmt::skip]
const LINES: [(bool, bool, &[StopRow]); 8] = [
    (true, true, &[
        ("Puerta del Sol", 0, 40.4169, -3.7035), ("Callao", 0, 40.4200, -3.7059),
        ("Plaza de Espana", 0, 40.4233, -3.7122), ("Arguelles", 4, 40.4301, -3.7156),
        ("Moncloa", 4, 40.4352, -3.7190), ("Ciudad Universitaria", 4, 40.4446, -3.7264),
    ]),
    (true, false, &[
        ("Atocha", 0, 40.4066, -3.6892), ("Neptuno", 0, 40.4150, -3.6940),
        ("Colon", 0, 40.4250, -3.6906), ("Nuevos Ministerios", 1, 40.4465, -3.6920),
        ("Santiago Bernabeu", 1, 40.4530, -3.6883), ("Plaza de Castilla", 1, 40.4669, -3.6890),
    ]),
    (false, true, &[
        ("Opera", 0, 40.4180, -3.7100), ("Plaza Mayor", 0, 40.4155, -3.7074),
        ("Sevilla", 0, 40.4175, -3.7000), ("Cibeles", 0, 40.4193, -3.6932),
        ("Retiro", 0, 40.4205, -3.6860), ("Principe de Vergara", 3, 40.4239, -3.6797),
    ]),
    (false, false, &[
        ("Legazpi", 2, 40.3912, -3.6951), ("Usera", 2, 40.3890, -3.7060),
        ("Plaza Eliptica", 2, 40.3850, -3.7180), ("Marques de Vadillo", 2, 40.3980, -3.7190),
        ("Puerta de Toledo", 0, 40.4069, -3.7110), ("La Latina", 0, 40.4113, -3.7090),
    ]),
    (false, false, &[
        ("Ventas", 3, 40.4306, -3.6630), ("Manuel Becerra", 3, 40.4283, -3.6690),
        ("Goya", 3, 40.4250, -3.6760), ("Serrano", 3, 40.4257, -3.6876),
        ("Colon", 0, 40.4250, -3.6906), ("Alonso Martinez", 0, 40.4277, -3.6953),
    ]),
    (false, false, &[
        ("Principe Pio", 4, 40.4210, -3.7200), ("Puerta del Angel", 4, 40.4133, -3.7290),
        ("Alto de Extremadura", 4, 40.4090, -3.7410), ("Lucero", 4, 40.4040, -3.7510),
        ("Campamento", 4, 40.3950, -3.7680),
    ]),
    (false, false, &[
        ("Chamartin", 1, 40.4720, -3.6820), ("Duque de Pastrana", 1, 40.4650, -3.6780),
        ("Cuzco", 1, 40.4580, -3.6900), ("Estrecho", 1, 40.4540, -3.7030),
        ("Tetuan", 1, 40.4610, -3.6990),
    ]),
    (false, false, &[
        ("Embajadores", 0, 40.4050, -3.7020), ("Delicias", 2, 40.3990, -3.6930),
        ("Mendez Alvaro", 2, 40.3950, -3.6780), ("Pacifico", 3, 40.4010, -3.6750),
        ("Conde de Casal", 3, 40.4070, -3.6700), ("O'Donnell", 3, 40.4230, -3.6710),
    ]),
];

fn thesis_lines() -> Vec<Line> {
    LINES
        .iter()
        .enumerate()
        .map(|(i, &(express, central, stops))| {
            let stops: Vec<Stop> = stops
                .iter()
                .map(|&(name, zone, lat, lon)| Stop {
                    name: name.to_owned(),
                    location: p(lat, lon),
                    zone,
                })
                .collect();
            let mut cum_km = Vec::with_capacity(stops.len());
            let mut total = 0.0;
            for (k, stop) in stops.iter().enumerate() {
                if k > 0 {
                    total += distance_km(stops[k - 1].location, stop.location);
                }
                cum_km.push(total);
            }
            Line {
                id: format!("line-{}", i + 1),
                number: format!("L{}", i + 1),
                express,
                central,
                capacity: if express { 100 } else { 60 },
                stops,
                cum_km,
            }
        })
        .collect()
}

/// A car park: (name, zone index, kind, lat, lon, spaces, hourly rate, demand factor).
type LotRow = (&'static str, usize, ParkingKind, f64, f64, u32, f64, f64);

/// Central garages run fullest (they fill at midday); outer surface lots least.
#[rustfmt::skip]
const LOTS: [LotRow; 12] = [
    ("Plaza Mayor Garage", 0, ParkingKind::Garage, 40.4153, -3.7072, 350, 3.20, 1.10),
    ("Gran Via Street", 0, ParkingKind::Street, 40.4199, -3.7040, 40, 2.80, 1.05),
    ("Sol Centro Garage", 0, ParkingKind::Garage, 40.4172, -3.7030, 420, 3.50, 1.12),
    ("San Miguel Lot", 0, ParkingKind::Surface, 40.4150, -3.7090, 120, 2.60, 1.00),
    ("Castellana Norte Garage", 1, ParkingKind::Garage, 40.4560, -3.6890, 500, 2.40, 0.95),
    ("Chamartin Station Lot", 1, ParkingKind::Surface, 40.4718, -3.6830, 250, 1.80, 0.90),
    ("Usera Market Street", 2, ParkingKind::Street, 40.3885, -3.7070, 35, 1.20, 0.92),
    ("Legazpi Lot", 2, ParkingKind::Surface, 40.3910, -3.6960, 150, 1.50, 0.85),
    ("Goya Shopping Garage", 3, ParkingKind::Garage, 40.4248, -3.6755, 380, 2.90, 1.02),
    ("Ventas Arena Lot", 3, ParkingKind::Surface, 40.4310, -3.6620, 200, 2.00, 0.88),
    ("Moncloa Interchange Garage", 4, ParkingKind::Garage, 40.4350, -3.7185, 450, 2.20, 0.97),
    ("Principe Pio Street", 4, ParkingKind::Street, 40.4205, -3.7205, 30, 1.60, 0.94),
];

fn thesis_lots() -> Vec<ParkingLot> {
    LOTS.iter()
        .map(
            |&(name, zone, kind, lat, lon, total, rate, demand)| ParkingLot {
                id: String::new(),
                name: name.to_owned(),
                zone,
                kind,
                location: p(lat, lon),
                total_spaces: total,
                hourly_rate: rate,
                demand_factor: demand,
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the thesis city has exactly the thesis inventory and ids.
    #[test]
    fn thesis_inventory() {
        let c = City::thesis(1);
        assert_eq!(c.zones.len(), 5);
        assert_eq!(c.roads.len(), 5);
        assert_eq!(c.sensors.len(), 21);
        assert_eq!(c.lines.len(), 8);
        assert_eq!(c.buses.len(), 33);
        assert_eq!(c.lots.len(), 12);
        assert_eq!(c.device_count(), 66);
        assert_eq!(c.sensors[20].id, "TS-021");
        assert_eq!(c.buses[32].id, "BUS-033");
        assert_eq!(c.lots[11].id, "PK-012");
        assert_eq!(c.zones[4].id, "zone-5");
        assert_eq!(c.lines[7].number, "L8");
        // Every zone has sensors and parking, every line buses, and capacities are 60 or 100.
        for z in 0..5 {
            assert!(
                c.sensors.iter().any(|s| s.zone == z),
                "zone {z} has no sensor"
            );
            assert!(c.lots.iter().any(|l| l.zone == z), "zone {z} has no lot");
        }
        for (l, line) in c.lines.iter().enumerate() {
            assert!(c.buses.iter().any(|b| b.line == l));
            assert_eq!(line.capacity, if line.express { 100 } else { 60 });
            assert!(line.length_km() > 1.0);
        }
        assert!(c.lines.iter().any(|l| l.express) && c.lines.iter().any(|l| !l.express));
    }

    // Proves a load factor keeps the thesis devices and adds numbered copies on the same network.
    #[test]
    fn load_factor_extends() {
        let c1 = City::thesis(1);
        let c10 = City::thesis(10);
        assert_eq!(
            (c10.sensors.len(), c10.buses.len(), c10.lots.len()),
            (210, 330, 120)
        );
        assert_eq!(&c10.sensors[..21], &c1.sensors[..]);
        assert_eq!(&c10.buses[..33], &c1.buses[..]);
        assert_eq!(&c10.lots[..12], &c1.lots[..]);
        assert_eq!(c10.sensors[21].id, "TS-022");
        assert_eq!(c10.sensors[21].road, c1.sensors[0].road);
        assert_eq!(c10.device("BUS-330"), Some(DeviceRef::Bus(329)));
        assert_eq!(c10.device("PK-001"), Some(DeviceRef::Lot(0)));
        assert_eq!(c10.device("TS-211"), None);
        assert_eq!(c10.device("TS-1"), None);
        assert_eq!(c10.device("zone-1"), None);
    }
}
