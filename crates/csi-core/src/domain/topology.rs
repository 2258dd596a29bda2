//! Topology: where a volume is reachable.

use std::collections::BTreeMap;

/// One topology segment set: label key to value, e.g. `topology.exa.csi.ddn.com/zone: zone-1`.
pub type Topology = BTreeMap<String, String>;

/// CreateVolume's accessibility requirements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyRequirement {
    /// The volume must be accessible from at least one of these.
    pub requisite: Vec<Topology>,
    /// Preferred, in order.
    pub preferred: Vec<Topology>,
}

impl TopologyRequirement {
    /// Whether the caller expressed no requirement.
    pub fn is_empty(&self) -> bool {
        self.requisite.is_empty() && self.preferred.is_empty()
    }

    /// Picks the candidate (an index into `candidates`) that satisfies the requirement:
    /// the first one fitting the preferred topologies in their order, else the first one
    /// fitting any requisite topology. A candidate fits a topology when no key they both
    /// define disagrees (a candidate without a zone is reachable from every zone). With no
    /// requisite topology any candidate is acceptable. `None`: none fits.
    pub fn choose(&self, candidates: &[&Topology]) -> Option<usize> {
        let fits = |cand: &Topology, want: &Topology| {
            want.iter().all(|(k, v)| cand.get(k).is_none_or(|c| c == v))
        };
        let allowed = |cand: &Topology| {
            self.requisite.is_empty() || self.requisite.iter().any(|r| fits(cand, r))
        };
        self.preferred
            .iter()
            .find_map(|want| candidates.iter().position(|c| fits(c, want) && allowed(c)))
            .or_else(|| candidates.iter().position(|c| allowed(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(z: &str) -> Topology {
        [("topology.exa.csi.ddn.com/zone".to_string(), z.to_string())].into()
    }

    #[test]
    fn preferred_wins_then_requisite_then_nothing() {
        let (a, b) = (zone("zone-1"), zone("zone-2"));
        let cands = [&a, &b];
        let req = TopologyRequirement {
            requisite: vec![zone("zone-1"), zone("zone-2")],
            preferred: vec![zone("zone-2")],
        };
        assert_eq!(req.choose(&cands), Some(1));
        let req = TopologyRequirement {
            requisite: vec![zone("zone-2")],
            preferred: vec![],
        };
        assert_eq!(req.choose(&cands), Some(1));
        let req = TopologyRequirement {
            requisite: vec![zone("zone-3")],
            preferred: vec![zone("zone-3")],
        };
        assert_eq!(req.choose(&cands), None);
        assert_eq!(TopologyRequirement::default().choose(&cands), Some(0));
        assert_eq!(TopologyRequirement::default().choose(&[]), None);
    }

    #[test]
    fn a_candidate_without_zone_is_reachable_everywhere() {
        let none = Topology::new();
        let req = TopologyRequirement {
            requisite: vec![zone("zone-9")],
            preferred: vec![],
        };
        assert_eq!(req.choose(&[&zone("zone-1"), &none]), Some(1));
    }
}
