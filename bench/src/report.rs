//! The bench's output: a table on stdout and the same rows (with raw samples) as JSON.
//!
//! A [`Row`] is one figure: its summary in its own unit, the ratio to its baseline where
//! the issue states the target as a ratio, the target's text and whether it is met.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Summary;

/// Whether a target is an upper or a lower bound.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub unit: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
    /// `median / baseline median` (or the figure's own value for absolute targets).
    pub ratio: Option<f64>,
    pub target: String,
    /// The value compared with the bound: the ratio, p99 or median, as the target says.
    pub checked: Option<f64>,
    pub bound: Option<Bound>,
    pub met: Option<bool>,
}

impl Row {
    /// A row without a target (a baseline or an informative figure).
    pub fn info(figure: impl Into<String>, unit: &'static str, summary: Summary) -> Self {
        Row {
            figure: figure.into(),
            unit,
            summary,
            ratio: None,
            target: String::new(),
            checked: None,
            bound: None,
            met: None,
        }
    }

    /// Sets the ratio to a baseline.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self
    }

    /// Sets the target: `value` compared with `bound`, described by `text`.
    pub fn target(mut self, text: &str, value: f64, bound: Bound) -> Self {
        self.target = text.to_owned();
        self.checked = Some(value);
        self.bound = Some(bound);
        self.met = Some(match bound {
            Bound::AtMost(limit) => value <= limit,
            Bound::AtLeast(limit) => value >= limit,
        });
        self
    }
}

/// The table as text.
pub fn table(rows: &[Row]) -> String {
    let head = [
        "figure", "unit", "median", "min", "max", "ratio", "target", "met",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.clone(),
                r.unit.to_owned(),
                num(r.summary.median),
                num(r.summary.min),
                num(r.summary.max),
                r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
                r.target.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let mut text = String::from("|");
        for (i, c) in cols.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if (2..6).contains(&i) {
                let _ = write!(text, " {}{} |", " ".repeat(pad), c);
            } else {
                let _ = write!(text, " {}{} |", c, " ".repeat(pad));
            }
        }
        out.push_str(&text);
        out.push('\n');
    };
    line(&head.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
    out
}

fn num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rows_and_checks_bounds() {
        let row = Row::info("hello", "ms", Summary::new(vec![10.0, 20.0]))
            .ratio(0.5)
            .target("<= 0.8x runc", 0.5, Bound::AtMost(0.8));
        assert_eq!(row.met, Some(true));
        let low = Row::info("tput", "tasks/s", Summary::new(vec![1.0])).target(
            ">= 2x",
            1.5,
            Bound::AtLeast(2.0),
        );
        assert_eq!(low.met, Some(false));
        let text = table(&[row, low]);
        assert!(text.contains("| hello"));
        assert!(text.contains("0.50x"));
        assert!(text.contains("NO"));
    }
}
