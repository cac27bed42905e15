//! Parking lots: capacity, gates, and the cars inside. The rules the CRDT demos could not keep hold
//! here because every change is applied in one log order: a lot never holds more cars than spaces,
//! and a plate is inside at most one lot.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::DomainError;

/// Hard limits that keep one lot's record small enough to persist and replicate as a unit.
pub const MAX_CAPACITY: u32 = 100_000;
pub const MAX_GATES: u32 = 64;
/// The longest stay a lot may allow: a year.
pub const MAX_STAY_MS: u64 = 365 * 24 * 3600 * 1000;
/// How many recent tows each lot remembers for reads.
const TOWS_KEPT: usize = 100;
const MAX_PLATE_CHARS: usize = 16;

/// A normalised licence plate: trimmed, upper-cased, 1-16 of `A-Z 0-9`, space and `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Plate(String);

impl Plate {
    pub fn parse(value: &str) -> Result<Self, DomainError> {
        let normalised = value.trim().to_uppercase();
        if normalised.is_empty() {
            return Err(DomainError::invalid("plate", "must not be empty"));
        }
        let chars = normalised.chars().count();
        if chars > MAX_PLATE_CHARS {
            return Err(DomainError::invalid(
                "plate",
                format!("is {chars} characters, the limit is {MAX_PLATE_CHARS}"),
            ));
        }
        if let Some(bad) =
            normalised.chars().find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit() || *c == ' ' || *c == '-'))
        {
            return Err(DomainError::invalid("plate", format!("contains {bad:?}; allowed are A-Z 0-9, space and -")));
        }
        Ok(Plate(normalised))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A lot's shape as a client configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LotSpec {
    pub capacity: u32,
    pub gates: u32,
    /// Cars parked longer than this are towed by the overstay sweeper; 0 means no limit.
    pub max_stay_ms: u64,
}

impl LotSpec {
    pub fn new(capacity: u32, gates: u32) -> Result<Self, DomainError> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(DomainError::invalid("capacity", format!("{capacity} is outside 1..={MAX_CAPACITY}")));
        }
        if gates == 0 || gates > MAX_GATES {
            return Err(DomainError::invalid("gates", format!("{gates} is outside 1..={MAX_GATES}")));
        }
        Ok(LotSpec { capacity, gates, max_stay_ms: 0 })
    }

    pub fn with_max_stay(self, max_stay_ms: u64) -> Result<Self, DomainError> {
        if max_stay_ms > MAX_STAY_MS {
            return Err(DomainError::invalid("max_stay_ms", format!("{max_stay_ms} is above {MAX_STAY_MS} (a year)")));
        }
        Ok(LotSpec { max_stay_ms, ..self })
    }

    /// Whether a car that entered at `entered_at_ms` has overstayed by `now_ms`.
    pub fn overstayed(&self, entered_at_ms: u64, now_ms: u64) -> bool {
        self.max_stay_ms > 0 && now_ms.saturating_sub(entered_at_ms) > self.max_stay_ms
    }
}

/// A car the overstay sweeper removed: which leader term did it and at which log index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tow {
    pub plate: Plate,
    pub entered_at_ms: u64,
    pub towed_at_ms: u64,
    pub index: u64,
    pub term: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vehicle {
    pub gate: u32,
    pub entered_at_ms: u64,
    /// The log index of the entry; the CRDT view names the car's committed entry by it. 0 for a
    /// car seen only through eventual writes.
    pub entered_index: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GateCount {
    pub entries: u64,
    pub exits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub spec: LotSpec,
    pub vehicles: BTreeMap<Plate, Vehicle>,
    /// Index `g - 1` counts gate `g`. Counts of gates removed by a resize are kept: they happened.
    pub gate_counts: Vec<GateCount>,
    /// The most recent tows, oldest first.
    pub tows: VecDeque<Tow>,
}

impl Lot {
    pub fn new(spec: LotSpec) -> Self {
        Lot {
            spec,
            vehicles: BTreeMap::new(),
            gate_counts: vec![GateCount::default(); spec.gates as usize],
            tows: VecDeque::new(),
        }
    }

    pub fn occupied(&self) -> u32 {
        self.vehicles.len() as u32
    }

    fn check_gate(&self, gate: u32) -> Result<usize, DomainError> {
        if gate == 0 || gate > self.spec.gates {
            return Err(DomainError::invalid("gate", format!("{gate} is outside 1..={}", self.spec.gates)));
        }
        Ok(gate as usize - 1)
    }

    /// Resizes; refuses to shrink below the cars inside.
    pub fn reconfigure(&mut self, name: &str, spec: LotSpec) -> Result<(), DomainError> {
        if spec.capacity < self.occupied() {
            return Err(DomainError::FailedPrecondition(format!(
                "lot {name} holds {} cars; it cannot shrink to {} spaces",
                self.occupied(),
                spec.capacity
            )));
        }
        if self.gate_counts.len() < spec.gates as usize {
            self.gate_counts.resize(spec.gates as usize, GateCount::default());
        }
        self.spec = spec;
        Ok(())
    }

    /// Admits a car that the caller has checked is in no lot.
    pub fn enter(&mut self, name: &str, plate: &Plate, gate: u32, at_ms: u64, index: u64) -> Result<(), DomainError> {
        let g = self.check_gate(gate)?;
        if self.occupied() >= self.spec.capacity {
            return Err(DomainError::FailedPrecondition(format!(
                "lot {name} is full ({}/{})",
                self.occupied(),
                self.spec.capacity
            )));
        }
        self.vehicles.insert(plate.clone(), Vehicle { gate, entered_at_ms: at_ms, entered_index: index });
        self.gate_counts[g].entries += 1;
        Ok(())
    }

    /// Lets a car out; returns how long it was parked.
    pub fn exit(&mut self, name: &str, plate: &Plate, gate: u32, at_ms: u64) -> Result<u64, DomainError> {
        let g = self.check_gate(gate)?;
        let vehicle = self
            .vehicles
            .remove(plate)
            .ok_or_else(|| DomainError::NotFound(format!("plate {} is not inside lot {name}", plate.as_str())))?;
        self.gate_counts[g].exits += 1;
        Ok(at_ms.saturating_sub(vehicle.entered_at_ms))
    }

    /// Tows `plate` if it is still inside and has overstayed by `at_ms`; a plate that left, or
    /// re-entered since the sweeper looked, stays. Answers whether it was towed.
    pub fn tow(&mut self, plate: &Plate, at_ms: u64, index: u64, term: u64) -> bool {
        let Some(vehicle) = self.vehicles.get(plate) else { return false };
        if !self.spec.overstayed(vehicle.entered_at_ms, at_ms) {
            return false;
        }
        let entered_at_ms = vehicle.entered_at_ms;
        self.vehicles.remove(plate);
        self.tows.push_back(Tow { plate: plate.clone(), entered_at_ms, towed_at_ms: at_ms, index, term });
        if self.tows.len() > TOWS_KEPT {
            self.tows.pop_front();
        }
        true
    }

    /// Plates parked past the lot's limit at `now_ms`.
    pub fn overstayed(&self, now_ms: u64) -> Vec<Plate> {
        self.vehicles
            .iter()
            .filter(|(_, v)| self.spec.overstayed(v.entered_at_ms, now_ms))
            .map(|(p, _)| p.clone())
            .collect()
    }
}

/// A lot as a read returns it, from the committed state or from a node's eventual view. Only the
/// eventual view can be over capacity or hold a plate twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotView {
    pub spec: LotSpec,
    pub vehicles: Vec<(Plate, Vehicle)>,
    pub gate_counts: Vec<GateCount>,
    pub over_capacity: bool,
    /// Plates this view holds more than once: entered concurrently on several nodes, or inside
    /// another lot too.
    pub duplicates: Vec<Plate>,
    pub tows: Vec<Tow>,
}

impl From<&Lot> for LotView {
    fn from(lot: &Lot) -> Self {
        LotView {
            spec: lot.spec,
            vehicles: lot.vehicles.iter().map(|(p, v)| (p.clone(), v.clone())).collect(),
            gate_counts: lot.gate_counts.clone(),
            over_capacity: false,
            duplicates: Vec::new(),
            tows: lot.tows.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_are_normalised_and_checked() {
        assert_eq!(Plate::parse("  ab-123 x ").unwrap().as_str(), "AB-123 X");
        assert!(Plate::parse("").is_err());
        assert!(Plate::parse("   ").is_err());
        assert!(Plate::parse("ABCDEFGHIJKLMNOPQ").is_err());
        assert!(Plate::parse("ABCDEFGHIJKLMNOP").is_ok());
        let err = Plate::parse("AB_1").unwrap_err().to_string();
        assert!(err.contains("plate"), "{err}");
        assert!(Plate::parse("ÄB1").is_err());
    }

    #[test]
    fn a_full_lot_refuses_and_a_resize_never_drops_cars() {
        let mut lot = Lot::new(LotSpec::new(2, 2).unwrap());
        let p = |s: &str| Plate::parse(s).unwrap();
        lot.enter("m", &p("A"), 1, 10, 1).unwrap();
        lot.enter("m", &p("B"), 2, 20, 2).unwrap();
        let full = lot.enter("m", &p("C"), 1, 30, 3).unwrap_err();
        assert_eq!(full, DomainError::FailedPrecondition("lot m is full (2/2)".into()));
        assert!(lot.reconfigure("m", LotSpec::new(1, 2).unwrap()).is_err());
        assert_eq!(lot.exit("m", &p("A"), 2, 110).unwrap(), 100);
        assert!(matches!(lot.exit("m", &p("A"), 2, 120), Err(DomainError::NotFound(_))));
        assert!(matches!(lot.enter("m", &p("C"), 3, 30, 4), Err(DomainError::InvalidArgument { .. })));
        assert_eq!(lot.gate_counts, vec![GateCount { entries: 1, exits: 0 }, GateCount { entries: 1, exits: 1 }]);
    }
}
