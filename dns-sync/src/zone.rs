//! The zone, built in one go from the database's view of the fleet.
//!
//! [`Zone::build`] is a pure function of the config and the data, so the
//! lead and the backup, reading the same replicated rows, serve the same
//! records under the same serial. A new zone replaces the old one whole
//! (one pointer swap): no query ever sees half of an update, and records are
//! never appended to a stale set.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use cluster_db::{ClusterState, HealthRow, Node, NodeListing, Role};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use crate::config::DnsConfig;
use crate::names::extra_record;

/// Everything a zone is built from, read in one database round.
#[derive(Clone, Debug)]
pub struct ZoneData {
    pub listing: NodeListing,
    pub health: Vec<HealthRow>,
    pub cluster: ClusterState,
    /// `aurora.changes.version`: the SOA serial.
    pub version: i64,
}

/// A registry row (or part of one) that was not served, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub node: String,
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug)]
pub struct Zone {
    pub origin: LowerName,
    pub serial: u32,
    soa: Record,
    /// Owner name → its records, in a stable order.
    records: BTreeMap<LowerName, Vec<Record>>,
    /// Names that exist only as ancestors of other names (`_tcp.<zone>`):
    /// they answer NODATA, not NXDOMAIN.
    interior: BTreeSet<LowerName>,
    pub skipped: Vec<Skipped>,
    pub down: Vec<String>,
    /// No node has reported within `down_after_secs`: reports cannot be
    /// written, and the down set is frozen rather than growing.
    pub health_frozen: bool,
    /// What `db.<zone>` answers.
    pub primary_ip: Option<IpAddr>,
}

/// What a query finds.
#[derive(Debug)]
pub enum Answer<'a> {
    /// The name is not in this zone.
    Refused,
    NxDomain,
    NoData,
    Records(Vec<&'a Record>),
}

/// `label.<origin>`.
fn child(origin: &Name, label: &str) -> Option<Name> {
    Name::from_ascii(label).ok()?.append_domain(origin).ok()
}

fn address(name: Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, rdata)
}

impl Zone {
    /// Builds the zone. Rows that cannot be served safely are skipped and
    /// listed in `skipped`; they never make the build fail.
    pub fn build(cfg: &DnsConfig, data: &ZoneData) -> Result<Zone, String> {
        let origin = cfg.zone.name().clone();
        let ttl = cfg.ttl_secs;
        let mut skipped: Vec<Skipped> = data
            .listing
            .rejected
            .iter()
            .map(|r| Skipped {
                node: r.name.clone(),
                reason: "invalid_row",
                detail: r.reason.clone(),
            })
            .collect();

        let health: BTreeMap<&str, &HealthRow> =
            data.health.iter().map(|h| (h.node.as_str(), h)).collect();
        // Down when a health-monitor marked it (the mark moved the serial,
        // so secondaries see the change), or, as a fallback when no monitor
        // is left to mark it, when its report is older than our own limit —
        // measured from the freshest report, not from now: when no report
        // can be written (the primary is gone and not yet replaced), every
        // report ages together, which says nothing about the nodes. The
        // view then freezes, and `health_frozen` says so.
        let staleness = cluster_db::Staleness::new(
            data.health.iter().map(|h| h.age_secs),
            cfg.down_after_secs as f64,
        );
        let health_frozen = staleness.frozen();
        let is_down = |n: &Node| {
            health
                .get(n.name.as_str())
                .is_some_and(|h| h.down_since.is_some() || staleness.is_stale(h.age_secs))
        };

        // Nodes we can serve, with their own names.
        let mut nodes: Vec<(&Node, Name)> = Vec::new();
        for n in &data.listing.nodes {
            if !cfg.vpn_network.contains(&n.vpn_ip) {
                skipped.push(Skipped {
                    node: n.name.to_string(),
                    reason: "ip_outside_vpn",
                    detail: format!("{} is outside {}", n.vpn_ip, cfg.vpn_network),
                });
                continue;
            }
            match child(&origin, n.name.as_str()) {
                Some(name) => nodes.push((n, name)),
                None => skipped.push(Skipped {
                    node: n.name.to_string(),
                    reason: "invalid_row",
                    detail: "not a DNS name".into(),
                }),
            }
        }
        let down: Vec<String> = nodes
            .iter()
            .filter(|(n, _)| is_down(n))
            .map(|(n, _)| n.name.to_string())
            .collect();

        let mut records: Vec<Record> = Vec::new();
        let of_role = |role: Role| nodes.iter().filter(move |(n, _)| n.role == role);

        // SOA and NS: the lead and the backup serve the zone.
        let ns_names: Vec<Name> = of_role(Role::Lead)
            .chain(of_role(Role::Backup))
            .map(|(_, name)| name.clone())
            .collect();
        let mname = ns_names
            .first()
            .cloned()
            .or_else(|| child(&origin, "ns"))
            .ok_or("cannot name the primary nameserver")?;
        let rname = child(&origin, "hostmaster").ok_or("cannot name the zone's mailbox")?;
        let serial = (data.version.rem_euclid(1 << 32)) as u32;
        let soa = Record::from_rdata(
            origin.clone(),
            ttl,
            RData::SOA(SOA::new(
                mname,
                rname,
                serial,
                60,
                30,
                86400,
                cfg.negative_ttl_secs,
            )),
        );
        for ns in &ns_names {
            records.push(Record::from_rdata(
                origin.clone(),
                ttl,
                RData::NS(NS(ns.clone())),
            ));
        }

        // Each node's own name: always served, down or not.
        for (n, name) in &nodes {
            records.push(address(name.clone(), ttl, n.vpn_ip));
        }
        // The apex and the role names.
        for (n, _) in of_role(Role::Lead) {
            records.push(address(origin.clone(), ttl, n.vpn_ip));
        }
        for (label, role) in [("lead", Role::Lead), ("backup", Role::Backup)] {
            if let Some(name) = child(&origin, label) {
                for (n, _) in of_role(role) {
                    records.push(address(name.clone(), ttl, n.vpn_ip));
                }
            }
        }
        // db → the current primary, whatever its role says.
        let primary = data.cluster.primary.as_ref();
        let mut primary_ip = None;
        if let (Some(p), Some(db)) = (primary, child(&origin, "db")) {
            for (n, _) in nodes.iter().filter(|(n, _)| &n.name == p) {
                primary_ip = Some(n.vpn_ip);
                records.push(address(db.clone(), cfg.db_ttl_secs, n.vpn_ip));
            }
        }
        // Multi-record names: live nodes only.
        let live = || nodes.iter().filter(|(n, _)| !is_down(n));
        for label in ["db-ro", "replica"] {
            if let Some(name) = child(&origin, label) {
                for (n, _) in live().filter(|(n, _)| Some(&n.name) != primary) {
                    records.push(address(name.clone(), ttl, n.vpn_ip));
                }
            }
        }
        if let Some(gpu) = child(&origin, "gpu") {
            for (n, _) in live().filter(|(n, _)| !n.gpus.is_empty()) {
                records.push(address(gpu.clone(), ttl, n.vpn_ip));
            }
        }
        for (alias, role) in &cfg.aliases {
            let Some(name) = child(&origin, alias) else {
                continue;
            };
            for (n, _) in of_role(*role) {
                records.push(address(name.clone(), ttl, n.vpn_ip));
            }
        }
        for (service, port) in &cfg.srv {
            let Some(name) = child(&origin, &format!("_{service}._tcp")) else {
                continue;
            };
            for (_, target) in live() {
                records.push(Record::from_rdata(
                    name.clone(),
                    ttl,
                    RData::SRV(SRV::new(10, 10, *port, target.clone())),
                ));
            }
        }
        for r in &cfg.extra_records {
            // Validated with the config.
            if let Ok(rec) = extra_record(&origin, r, ttl) {
                records.push(rec);
            }
        }

        let origin_lower = LowerName::from(origin.clone());
        let mut by_name: BTreeMap<LowerName, Vec<Record>> = BTreeMap::new();
        by_name
            .entry(origin_lower.clone())
            .or_default()
            .push(soa.clone());
        for r in records {
            let owner = LowerName::from(r.name.clone());
            let set = by_name.entry(owner).or_default();
            if !set.contains(&r) {
                set.push(r);
            }
        }
        let mut interior = BTreeSet::new();
        for name in by_name.keys() {
            let mut n = Name::from(name.clone()).base_name();
            while n.num_labels() > origin.num_labels() {
                interior.insert(LowerName::from(n.clone()));
                n = n.base_name();
            }
        }
        Ok(Zone {
            origin: origin_lower,
            serial,
            soa,
            records: by_name,
            interior,
            skipped,
            down,
            health_frozen,
            primary_ip,
        })
    }

    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// Number of records, SOA included.
    pub fn len(&self) -> usize {
        self.records.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record except the SOA, in a stable order (for AXFR).
    pub fn all_but_soa(&self) -> impl Iterator<Item = &Record> {
        self.records
            .values()
            .flatten()
            .filter(|r| r.record_type() != RecordType::SOA)
    }

    pub fn lookup(&self, name: &LowerName, qtype: RecordType) -> Answer<'_> {
        if !self.origin.zone_of(name) {
            return Answer::Refused;
        }
        let Some(set) = self.records.get(name) else {
            return if self.interior.contains(name) {
                Answer::NoData
            } else {
                Answer::NxDomain
            };
        };
        if qtype == RecordType::ANY {
            return Answer::Records(set.iter().collect());
        }
        let found: Vec<&Record> = set.iter().filter(|r| r.record_type() == qtype).collect();
        if !found.is_empty() {
            return Answer::Records(found);
        }
        // A CNAME answers every type; follow it once inside the zone.
        if let Some(cname) = set.iter().find(|r| r.record_type() == RecordType::CNAME) {
            let mut out = vec![cname];
            if let RData::CNAME(CNAME(target)) = &cname.data {
                if let Some(t) = self.records.get(&LowerName::from(target.clone())) {
                    out.extend(t.iter().filter(|r| r.record_type() == qtype));
                }
            }
            return Answer::Records(out);
        }
        Answer::NoData
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ExtraRecord, ZoneName};
    use chrono::Utc;
    use cluster_db::{HealthStatus, NodeName, RejectedRow};
    use std::str::FromStr;

    fn node(name: &str, role: Role, ip: &str, gpus: usize) -> Node {
        Node {
            name: NodeName::parse(name).unwrap(),
            role,
            vpn_ip: ip.parse().unwrap(),
            wg_public_key: None,
            wg_endpoint: None,
            labels: Default::default(),
            gpus: vec![serde_json::json!({"name": "A100"}); gpus],
            versions: Default::default(),
            registered_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn health(name: &str, age_secs: f64) -> HealthRow {
        HealthRow {
            node: NodeName::parse(name).unwrap(),
            status: HealthStatus::Passing,
            checks: serde_json::json!([]),
            reported_at: Utc::now(),
            age_secs,
            down_since: None,
        }
    }

    fn data() -> ZoneData {
        ZoneData {
            listing: NodeListing {
                nodes: vec![
                    node("aurora", Role::Lead, "10.0.0.1", 0),
                    node("star", Role::Backup, "10.0.0.2", 0),
                    node("vengeance", Role::Compute, "10.0.0.3", 1),
                    node("iceland", Role::Compute, "10.0.0.4", 0),
                    node("outsider", Role::Compute, "192.168.1.9", 0),
                ],
                rejected: vec![RejectedRow {
                    name: "Evil".into(),
                    reason: "bad label".into(),
                }],
            },
            // iceland stopped reporting long ago; the others report.
            health: [
                ("aurora", 2.0),
                ("star", 1.0),
                ("vengeance", 4.0),
                ("iceland", 500.0),
            ]
            .iter()
            .map(|(n, age)| health(n, *age))
            .collect(),
            cluster: ClusterState {
                epoch: 3,
                primary: Some(NodeName::parse("star").unwrap()),
                changed_at: Utc::now(),
            },
            version: 42,
        }
    }

    fn cfg() -> DnsConfig {
        crate::config::Config::default().dns
    }

    fn ips(z: &Zone, name: &str, t: RecordType) -> Vec<String> {
        let n = LowerName::from_str(name).unwrap();
        match z.lookup(&n, t) {
            Answer::Records(r) => {
                let mut v: Vec<String> = r.iter().map(|r| r.data.to_string()).collect();
                v.sort();
                v
            }
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn records() {
        let z = Zone::build(&cfg(), &data()).unwrap();
        assert_eq!(z.serial, 42);
        assert_eq!(ips(&z, "aurora.internal.", RecordType::A), ["10.0.0.1"]);
        assert_eq!(
            ips(&z, "vengeance.aurora.internal.", RecordType::A),
            ["10.0.0.3"]
        );
        // db follows the cluster state, not the role.
        assert_eq!(ips(&z, "db.aurora.internal.", RecordType::A), ["10.0.0.2"]);
        // iceland is down: out of the multi-record names, still under its own.
        assert_eq!(
            ips(&z, "replica.aurora.internal.", RecordType::A),
            ["10.0.0.1", "10.0.0.3"]
        );
        assert_eq!(
            ips(&z, "iceland.aurora.internal.", RecordType::A),
            ["10.0.0.4"]
        );
        assert_eq!(ips(&z, "gpu.aurora.internal.", RecordType::A), ["10.0.0.3"]);
        assert_eq!(
            ips(&z, "grafana.aurora.internal.", RecordType::A),
            ["10.0.0.1"]
        );
        assert_eq!(ips(&z, "aurora.internal.", RecordType::NS).len(), 2);
        assert_eq!(
            ips(&z, "_repl-manager._tcp.aurora.internal.", RecordType::SRV).len(),
            3
        );
        // The outsider and the invalid row are skipped, with reasons.
        assert!(matches!(
            z.lookup(
                &LowerName::from_str("outsider.aurora.internal.").unwrap(),
                RecordType::A
            ),
            Answer::NxDomain
        ));
        let reasons: Vec<_> = z.skipped.iter().map(|s| s.reason).collect();
        assert_eq!(reasons, ["invalid_row", "ip_outside_vpn"]);
        assert_eq!(z.down, ["iceland"]);
    }

    /// The primary died and no failover happened: nobody can write a
    /// report, so every report ages together. That is not evidence that
    /// the nodes are down: the view freezes, the names keep answering, and
    /// the zone says it is frozen.
    #[test]
    fn reports_that_stop_everywhere_freeze_the_view() {
        let mut d = data();
        for h in &mut d.health {
            h.age_secs += 45.0;
        }
        let z = Zone::build(&cfg(), &d).unwrap();
        assert_eq!(
            ips(&z, "replica.aurora.internal.", RecordType::A),
            ["10.0.0.1", "10.0.0.3"]
        );
        assert_eq!(z.down, ["iceland"], "the node that stopped first");
        assert!(z.health_frozen);
        assert!(!Zone::build(&cfg(), &data()).unwrap().health_frozen);
        // A mark a monitor wrote while it could still write holds.
        d.health[2].down_since = Some(Utc::now());
        let z = Zone::build(&cfg(), &d).unwrap();
        assert_eq!(
            ips(&z, "replica.aurora.internal.", RecordType::A),
            ["10.0.0.1"]
        );
    }

    #[test]
    fn negative_answers() {
        let z = Zone::build(&cfg(), &data()).unwrap();
        let q = |n: &str, t| z.lookup(&LowerName::from_str(n).unwrap(), t);
        assert!(matches!(q("example.com.", RecordType::A), Answer::Refused));
        assert!(matches!(
            q("nope.aurora.internal.", RecordType::A),
            Answer::NxDomain
        ));
        assert!(matches!(
            q("aurora.internal.", RecordType::MX),
            Answer::NoData
        ));
        assert!(matches!(
            q("_tcp.aurora.internal.", RecordType::A),
            Answer::NoData
        ));
        // Case does not matter.
        assert!(matches!(
            q("DB.Aurora.Internal.", RecordType::A),
            Answer::Records(_)
        ));
    }

    #[test]
    fn same_data_same_zone() {
        let a = Zone::build(&cfg(), &data()).unwrap();
        let b = Zone::build(&cfg(), &data()).unwrap();
        let all = |z: &Zone| z.all_but_soa().map(|r| r.to_string()).collect::<Vec<_>>();
        assert_eq!(all(&a), all(&b));
        assert_eq!(a.serial, b.serial);
    }

    #[test]
    fn extra_records_and_zone_names() {
        let mut c = cfg();
        c.extra_records.push(ExtraRecord {
            name: "www".into(),
            rtype: "CNAME".into(),
            value: "aurora".into(),
            ttl_secs: None,
        });
        let z = Zone::build(&c, &data()).unwrap();
        let got = ips(&z, "www.aurora.internal.", RecordType::A);
        assert_eq!(got, ["10.0.0.1", "aurora.aurora.internal."]);
        assert!(ZoneName::parse("aurora.local").is_ok());
        assert!(ZoneName::parse("bad_zone").is_err());
        assert!(ZoneName::parse("").is_err());
        let origin = ZoneName::parse("aurora.internal").unwrap();
        assert_eq!(ZoneName::default_zone(), origin);
        assert_eq!(origin.to_string(), "aurora.internal");
        let origin = origin.name().clone();
        for (t, v) in [("A", "x"), ("MX", "a"), ("AAAA", "10.0.0.1")] {
            let r = ExtraRecord {
                name: "a".into(),
                rtype: t.into(),
                value: v.into(),
                ttl_secs: None,
            };
            assert!(extra_record(&origin, &r, 30).is_err(), "{t} {v}");
        }
    }
}
