//! Cron schedules in the standard 5-field form people know from crontab and Kubernetes
//! CronJobs, translated for the `cron` crate.
//!
//! Two differences are bridged here: the crate wants a seconds field and numbers weekdays from
//! 1 = Sunday (day-of-week is therefore rewritten as an explicit list of day names), and it
//! runs a job only when day-of-month *and* day-of-week match, where crontab runs it when
//! *either* matches if both are restricted (such a schedule becomes two, merged).
//!
//! A schedule that can never run (`0 0 30 2 *`) is refused: a set or policy under it would
//! silently never sync or back up.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// A validated schedule. Compares and prints as the user wrote it.
#[derive(Clone, Serialize)]
#[serde(into = "String")]
pub struct Schedule {
    expression: String,
    /// One schedule, or two whose run times are merged (crontab's day-of-month OR day-of-week).
    #[serde(skip)]
    crons: Vec<cron::Schedule>,
}

impl Schedule {
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The first run time strictly after `after`.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.crons.iter().filter_map(|c| c.after(after).next()).min()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

impl Eq for Schedule {}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.expression)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.expression
    }
}

/// Shorthands and what the `cron` crate calls them.
const MACROS: [(&str, &str); 6] = [
    ("@yearly", "@yearly"),
    ("@annually", "@yearly"),
    ("@monthly", "@monthly"),
    ("@weekly", "@weekly"),
    ("@daily", "@daily"),
    ("@hourly", "@hourly"),
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const FIELD_NAMES: &str = "minute hour day-of-month month day-of-week";

/// Why an expression is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub message: String,
    /// The expression is well formed, but no date matches it.
    pub never_runs: bool,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for ScheduleError {
    fn from(message: String) -> ScheduleError {
        ScheduleError { message, never_runs: false }
    }
}

/// How far ahead a schedule must have a run. Five fields repeat with the calendar, and every
/// date that exists comes back within 8 years (the 29th of February skips 2100): a schedule
/// with no run in this window has none at all.
const HORIZON_YEARS: i32 = 10;

/// Whether any of `crons` runs within [`HORIZON_YEARS`]. Checked from a fixed moment, which
/// answers for every moment (see above) and keeps validation independent of the clock.
fn runs_at_all(crons: &[cron::Schedule]) -> bool {
    use chrono::TimeZone as _;
    let (Some(from), Some(until)) = (
        Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).single(),
        Utc.with_ymd_and_hms(2001 + HORIZON_YEARS, 1, 1, 0, 0, 0).single(),
    ) else {
        return true;
    };
    crons.iter().any(|c| c.after(&from).next().is_some_and(|t| t < until))
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(expression: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = expression.trim();
        let translated: Vec<String> = if trimmed.starts_with('@') {
            let Some((_, name)) = MACROS.iter().find(|(m, _)| *m == trimmed) else {
                let known: Vec<&str> = MACROS.iter().map(|(m, _)| *m).collect();
                return Err(format!("`{trimmed}` is not a known shorthand: use one of {}", known.join(", ")).into());
            };
            vec![name.to_string()]
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(format!(
                    "`{trimmed}` has {} field{}, a schedule has 5: {FIELD_NAMES}",
                    fields.len(),
                    if fields.len() == 1 { "" } else { "s" }
                )
                .into());
            }
            let [minute, hour, dom, month, dow] = [fields[0], fields[1], fields[2], fields[3], fields[4]];
            let dow = weekdays(dow)?;
            let unrestricted = |f: &str| f == "*" || f == "?";
            if !unrestricted(dom) && !unrestricted(&dow) {
                vec![format!("0 {minute} {hour} {dom} {month} *"), format!("0 {minute} {hour} * {month} {dow}")]
            } else {
                vec![format!("0 {minute} {hour} {dom} {month} {dow}")]
            }
        };
        let crons = translated
            .iter()
            .map(|t| {
                cron::Schedule::from_str(t).map_err(|e| {
                    // The crate's message pictures the translated expression; keep its reason.
                    let text = e.to_string();
                    let reason = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
                    format!("`{trimmed}` is not a valid cron schedule: {reason} (fields: {FIELD_NAMES})")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !runs_at_all(&crons) {
            return Err(ScheduleError {
                message: format!("`{trimmed}` never runs: no date matches it"),
                never_runs: true,
            });
        }
        Ok(Schedule { expression: trimmed.to_string(), crons })
    }
}

/// Rewrites a crontab day-of-week field (numbers 0-7 with Sunday as 0 and 7, names, ranges,
/// steps, lists) as an explicit list of day names, which means the same to the `cron` crate.
fn weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let day = |token: &str| -> Result<usize, String> {
        if let Ok(n) = token.parse::<usize>() {
            return if n <= 7 {
                Ok(n % 7)
            } else {
                Err(format!("day-of-week {n} is out of range: use 0-7 (0 and 7 are Sunday) or SUN-SAT"))
            };
        }
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(token))
            .ok_or_else(|| format!("`{token}` is not a day of the week: use 0-7 or SUN-SAT"))
    };
    let mut days = BTreeSet::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step = s.parse::<usize>().ok().filter(|s| *s > 0).ok_or_else(|| format!("`{s}` is not a step"))?;
                (r, step)
            }
            None => (item, 1),
        };
        let (first, last) = match range.split_once('-') {
            _ if range == "*" => (0, 6),
            // `7` as the end of a range means Sunday at the end of the week.
            Some((a, b)) => (day(a)?, if b == "7" { 7 } else { day(b)? }),
            // `n/step` runs from n to the end of the week.
            None if step > 1 => (day(range)?, 6),
            None => {
                let d = day(range)?;
                (d, d)
            }
        };
        if first > last {
            return Err(format!("day-of-week range `{range}` runs backwards: write it from the earlier day"));
        }
        days.extend((first..=last).step_by(step).map(|d| d % 7));
    }
    Ok(days.into_iter().map(|d| DAY_NAMES[d]).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone};

    fn runs(expr: &str, n: usize) -> Vec<String> {
        let s: Schedule = expr.parse().unwrap();
        let mut t = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        (0..n)
            .map(|_| {
                t = s.next_after(&t).unwrap();
                format!("{} {}", t.format("%Y-%m-%d %H:%M"), t.weekday())
            })
            .collect()
    }

    #[test]
    fn accepts_standard_forms() {
        for ok in
            ["0 * * * *", "*/15 2-4 * * MON-FRI", "0 3 * * 0", "5 4 1 1-6 *", "@daily", "@annually", " 0 3 * * * "]
        {
            assert!(ok.parse::<Schedule>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_wrong_forms_with_reasons() {
        let six = "0 0 * * * *".parse::<Schedule>().unwrap_err().message;
        assert!(six.contains("6 fields"), "{six}");
        assert!("61 * * * *".parse::<Schedule>().is_err());
        assert!("* * * * 8".parse::<Schedule>().unwrap_err().message.contains("day-of-week 8"));
        assert!("* * * * 5-1".parse::<Schedule>().unwrap_err().message.contains("backwards"));
        assert!("@fortnightly".parse::<Schedule>().unwrap_err().message.contains("shorthand"));
        assert!("".parse::<Schedule>().is_err());
    }

    /// A schedule that can never run is refused instead of never running: a MirrorSet under
    /// `0 0 30 2 *` would never sync.
    #[test]
    fn schedules_that_never_run_are_refused() {
        for never in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "15 3 31 2-4/2 *"] {
            let e = never.parse::<Schedule>().unwrap_err();
            assert!(e.never_runs && e.message.contains("never runs"), "{never}: {e}");
        }
        // Rare is not never: once every four years, or on a Monday when the 30th never comes.
        for rare in ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 * *"] {
            assert!(rare.parse::<Schedule>().is_ok(), "{rare}");
        }
        assert_eq!(runs("0 0 29 2 *", 2), ["2028-02-29 00:00 Tue", "2032-02-29 00:00 Sun"]);
    }

    #[test]
    fn weekday_numbers_mean_what_crontab_means() {
        // 2026-11-01 is a Sunday.
        assert_eq!(runs("0 3 * * 0", 2), ["2026-11-01 03:00 Sun", "2026-11-08 03:00 Sun"]);
        assert_eq!(runs("0 3 * * 7", 1), ["2026-11-01 03:00 Sun"]);
        assert_eq!(runs("0 3 * * 1-5", 2), ["2026-11-02 03:00 Mon", "2026-11-03 03:00 Tue"]);
        assert_eq!(runs("0 3 * * 5-7", 3), ["2026-11-01 03:00 Sun", "2026-11-06 03:00 Fri", "2026-11-07 03:00 Sat"]);
        // 1, 3, 5 and 7: Monday, Wednesday, Friday and Sunday.
        assert_eq!(runs("0 3 * * 1-7/2", 3), ["2026-11-01 03:00 Sun", "2026-11-02 03:00 Mon", "2026-11-04 03:00 Wed"]);
        assert_eq!(runs("0 3 * * 4/2", 2), ["2026-11-05 03:00 Thu", "2026-11-07 03:00 Sat"]);
        assert_eq!(runs("0 3 * * sat,sun", 2), ["2026-11-01 03:00 Sun", "2026-11-07 03:00 Sat"]);
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_crontab() {
        // The 15th, and every Monday.
        assert_eq!(
            runs("0 3 15 * 1", 4),
            ["2026-11-02 03:00 Mon", "2026-11-09 03:00 Mon", "2026-11-15 03:00 Sun", "2026-11-16 03:00 Mon"]
        );
    }

    #[test]
    fn keeps_the_expression_as_written() {
        let s: Schedule = "0 * * * *".parse().unwrap();
        assert_eq!(s.to_string(), "0 * * * *");
        assert_eq!(runs("@annually", 1), ["2027-01-01 00:00 Fri"]);
    }
}
