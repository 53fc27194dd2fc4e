//! Percentiles and the printed forms of what was measured. A cell without a measurement is
//! printed as "-", never as a number.

use std::time::Duration;

/// The `p`-th percentile (0..=100) by nearest rank; `None` for no samples.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub fn ms(value: Option<Duration>) -> String {
    value.map_or("-".into(), |d| format!("{:.0}", d.as_secs_f64() * 1000.0))
}

pub fn secs(value: Option<Duration>) -> String {
    value.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

pub fn float(value: Option<f64>, decimals: usize) -> String {
    value.map_or("-".into(), |v| format!("{v:.decimals$}"))
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub const MIB: f64 = 1024.0 * 1024.0;
pub const KIB: f64 = 1024.0;
