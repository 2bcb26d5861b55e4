//! The command line's own parsers: consistency strings and durations, as
//! `shoal` takes them. The client library takes typed values only.

use kv_client::ReadConsistency;
use std::time::Duration;

/// Parses `strong`, `bounded:DURATION` (`250ms`, `2s`, `1m`) or
/// `ryw:VERSION`.
pub fn consistency(text: &str) -> Result<ReadConsistency, String> {
    match text.split_once(':') {
        None if text == "strong" => Ok(ReadConsistency::Strong),
        Some(("bounded", bound)) => duration(bound).map(ReadConsistency::Bounded),
        Some(("ryw", version)) => version
            .parse()
            .map(ReadConsistency::AtLeast)
            .map_err(|_| format!("ryw:VERSION needs a version number, got {version:?}")),
        None if text == "ryw" => Err("ryw needs the version token a write printed: ryw:VERSION".into()),
        _ => Err(format!(
            "unknown consistency {text:?}: use strong, bounded:DURATION (e.g. bounded:500ms) or ryw:VERSION"
        )),
    }
}

/// Parses a whole number with its unit: `250ms`, `2s`, `1m`, `1h`.
/// A value that must not be empty (a region name, say).
pub fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.to_string())
    }
}

pub fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration {text:?}: a whole number with a unit, e.g. 250ms, 2s, 1m or 1h");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}
