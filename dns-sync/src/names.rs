//! The zone's vocabulary, parsed once when the config loads: its name and
//! the static records configured beside the generated ones. The config and
//! the zone builder both use it; neither depends on the other for it.

use std::fmt;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The cluster's zone (`aurora.internal`): DNS labels, stored as an FQDN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneName(Name);

impl ZoneName {
    /// Parses and checks the zone name.
    pub fn parse(zone: &str) -> Result<Self, String> {
        let trimmed = zone.trim_end_matches('.');
        if trimmed.is_empty() {
            return Err("must not be empty".into());
        }
        for label in trimmed.split('.') {
            cluster_db::model::validate_label(label)
                .map_err(|e| format!("{zone:?}: label {label:?} {e}"))?;
        }
        let mut name = Name::from_ascii(trimmed).map_err(|e| format!("{zone:?}: {e}"))?;
        name.set_fqdn(true);
        Ok(Self(name))
    }

    /// `aurora.internal`, the default.
    pub fn default_zone() -> Self {
        // Valid labels: the fallback (the root) is never taken; a unit
        // test holds it to that.
        Self::parse("aurora.internal").unwrap_or_else(|_| Self(Name::root()))
    }

    pub fn name(&self) -> &Name {
        &self.0
    }
}

/// Without the trailing dot, as it is configured.
impl fmt::Display for ZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.to_ascii().trim_end_matches('.'))
    }
}

impl Serialize for ZoneName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ZoneName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A static record of `[[dns.extra_records]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ExtraRecord {
    /// Relative to the zone (`www`, `_dmarc`), or `@` for the apex.
    pub name: String,
    /// `A`, `AAAA`, `CNAME` or `TXT`.
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    pub ttl_secs: Option<u32>,
}

/// One configured static record.
pub fn extra_record(origin: &Name, r: &ExtraRecord, default_ttl: u32) -> Result<Record, String> {
    let name = if r.name == "@" {
        origin.clone()
    } else {
        let n = Name::from_ascii(&r.name).map_err(|e| format!("name {:?}: {e}", r.name))?;
        if n.is_fqdn() {
            return Err(format!("name {:?} must be relative to the zone", r.name));
        }
        n.append_domain(origin)
            .map_err(|e| format!("name {:?}: {e}", r.name))?
    };
    let ttl = r.ttl_secs.unwrap_or(default_ttl);
    let rdata = match r.rtype.to_ascii_uppercase().as_str() {
        "A" => RData::A(A(r
            .value
            .parse()
            .map_err(|e| format!("A value {:?}: {e}", r.value))?)),
        "AAAA" => RData::AAAA(AAAA(
            r.value
                .parse()
                .map_err(|e| format!("AAAA value {:?}: {e}", r.value))?,
        )),
        "CNAME" => {
            let mut target = Name::from_ascii(&r.value)
                .map_err(|e| format!("CNAME value {:?}: {e}", r.value))?;
            if !target.is_fqdn() {
                target = target.append_domain(origin).map_err(|e| e.to_string())?;
            }
            RData::CNAME(CNAME(target))
        }
        "TXT" => {
            if r.value.len() > 255 {
                return Err("TXT value over 255 bytes".into());
            }
            RData::TXT(TXT::new(vec![r.value.clone()]))
        }
        other => {
            return Err(format!(
                "type {other:?} not supported (A, AAAA, CNAME, TXT)"
            ))
        }
    };
    Ok(Record::from_rdata(name, ttl, rdata))
}
