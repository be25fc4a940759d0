//! WAL positions and the lag thresholds of `GET /replica?lag=`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position (`pg_lsn`), e.g. `0/3000060`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes from `self` up to `later`; 0 when `later` is not ahead.
    pub fn bytes_until(self, later: Lsn) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN (expected X/Y)"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| format!("{s:?} is not an LSN"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| format!("{s:?} is not an LSN"))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A lag limit: bytes (`16777216`, `16MB`, `1GiB`) or time (`1s`, `500ms`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LagLimit {
    Bytes(u64),
    Seconds(f64),
}

impl FromStr for LagLimit {
    type Err = String;
    fn from_str(raw: &str) -> Result<Self, String> {
        let s = raw.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("lag {raw:?}: expected a number with an optional unit"))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("lag {raw:?} must be a non-negative number"));
        }
        let bytes = |mult: f64| Ok(LagLimit::Bytes((value * mult) as u64));
        match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => bytes(1.0),
            "kb" | "kib" | "k" => bytes(1024.0),
            "mb" | "mib" | "m" => bytes(1024.0 * 1024.0),
            "gb" | "gib" | "g" => bytes(1024.0 * 1024.0 * 1024.0),
            "ms" => Ok(LagLimit::Seconds(value / 1000.0)),
            "s" | "sec" => Ok(LagLimit::Seconds(value)),
            "min" => Ok(LagLimit::Seconds(value * 60.0)),
            other => Err(format!(
                "lag {raw:?}: unknown unit {other:?} (use B, kB, MB, GB, ms, s or min)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trip_and_distance() {
        let a: Lsn = "0/3000060".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert_eq!(a.to_string(), "0/3000060");
        assert_eq!(b.0, 1 << 32);
        assert_eq!(a.bytes_until(b), (1 << 32) - 0x300_0060);
        assert_eq!(b.bytes_until(a), 0);
        assert!("3000060".parse::<Lsn>().is_err());
        assert!("0/xyz".parse::<Lsn>().is_err());
    }

    #[test]
    fn lag_limits() {
        assert_eq!("1024".parse(), Ok(LagLimit::Bytes(1024)));
        assert_eq!("10MB".parse(), Ok(LagLimit::Bytes(10 << 20)));
        assert_eq!("16 kB".parse(), Ok(LagLimit::Bytes(16 << 10)));
        assert_eq!("1s".parse(), Ok(LagLimit::Seconds(1.0)));
        assert_eq!("250ms".parse(), Ok(LagLimit::Seconds(0.25)));
        assert!("-1".parse::<LagLimit>().is_err());
        assert!("10 parsecs".parse::<LagLimit>().is_err());
        assert!("".parse::<LagLimit>().is_err());
    }
}
