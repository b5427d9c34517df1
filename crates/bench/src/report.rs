//! Results: a table for people, JSON for tools.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// One line of a scenario's table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// The figure, formatted.
    pub value: String,
    /// The target, if the issue sets one.
    pub target: Option<String>,
    /// Whether the target is met.
    pub met: Option<bool>,
}

/// The outcome of one scenario run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name with its main parameter, e.g. `relay P=100`.
    pub title: String,
    /// Table rows.
    pub rows: Vec<Row>,
    /// Everything, machine-readable.
    pub json: Value,
    /// Caveats (saturated generator, errors, ...).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report.
    pub fn new(title: impl Into<String>) -> Report {
        Report { title: title.into(), rows: Vec::new(), json: json!({}), notes: Vec::new() }
    }

    /// Adds a row without a target.
    pub fn row(&mut self, metric: &str, value: impl Into<String>) {
        self.rows.push(Row { metric: metric.to_owned(), value: value.into(), target: None, met: None });
    }

    /// Adds a row with a target and whether it is met.
    pub fn target(&mut self, metric: &str, value: impl Into<String>, target: &str, met: bool) {
        self.rows.push(Row {
            metric: metric.to_owned(),
            value: value.into(),
            target: Some(target.to_owned()),
            met: Some(met),
        });
    }

    /// Prints the table.
    pub fn print(&self) {
        println!("\n== {} ==", self.title);
        let w = self.rows.iter().map(|r| r.metric.len()).max().unwrap_or(6).max(6);
        let v = self.rows.iter().map(|r| r.value.len()).max().unwrap_or(5).max(5);
        println!("{:<w$}  {:>v$}  target", "metric", "value");
        for r in &self.rows {
            let t = match (&r.target, r.met) {
                (Some(t), Some(true)) => format!("{t}  MET"),
                (Some(t), Some(false)) => format!("{t}  MISSED"),
                (Some(t), None) => t.clone(),
                _ => String::new(),
            };
            println!("{:<w$}  {:>v$}  {t}", r.metric, r.value);
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }

    /// The JSON form, with the rows and notes included.
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| json!({ "metric": r.metric, "value": r.value, "target": r.target, "met": r.met }))
            .collect();
        json!({ "title": self.title, "rows": rows, "notes": self.notes, "data": self.json })
    }
}

/// A latency histogram in nanoseconds, 1 ns .. 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's preconditions.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records a duration, saturating at the histogram's top.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).clamp(1, 60_000_000_000);
    h.saturating_record(ns);
}

/// Quantiles in microseconds.
pub fn quantiles_us(h: &Histogram<u64>) -> Value {
    let q = |x: f64| h.value_at_quantile(x) as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_us": q(0.5), "p90_us": q(0.9), "p99_us": q(0.99), "p999_us": q(0.999),
        "max_us": h.max() as f64 / 1000.0, "mean_us": h.mean() / 1000.0,
    })
}

/// `1.23 ms` / `456 µs` formatting of a nanosecond value.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.0} µs", ns as f64 / 1e3)
    }
}

/// p50 / p99 / p999 of a histogram, formatted.
pub fn fmt_quantiles(h: &Histogram<u64>) -> String {
    format!(
        "{} / {} / {}",
        fmt_ns(h.value_at_quantile(0.5)),
        fmt_ns(h.value_at_quantile(0.99)),
        fmt_ns(h.value_at_quantile(0.999))
    )
}

/// Thousands separators for counts.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(fmt_count(0), "0");
        assert_eq!(fmt_count(999), "999");
        assert_eq!(fmt_count(1000), "1,000");
        assert_eq!(fmt_count(1234567), "1,234,567");
    }

    #[test]
    fn durations_pick_a_unit() {
        assert_eq!(fmt_ns(1_500), "2 µs");
        assert_eq!(fmt_ns(2_500_000), "2.50 ms");
        assert_eq!(fmt_ns(25_000_000), "25.0 ms");
    }
}
