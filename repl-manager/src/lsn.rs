//! The lag thresholds of `GET /replica?lag=`. WAL positions are part of
//! the HTTP contract: [`aurora_api::Lsn`].

use std::str::FromStr;

pub use aurora_api::Lsn;

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
