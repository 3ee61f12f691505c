//! Cron schedules in the standard 5-field form people know from crontab and Kubernetes
//! CronJobs, translated for the `cron` crate (which wants a seconds field and numbers the days
//! of the week from 1 = Sunday).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A validated schedule. Compares and prints as the user wrote it.
#[derive(Clone, Serialize)]
#[serde(into = "String")]
pub struct Schedule {
    expression: String,
    #[serde(skip)]
    cron: cron::Schedule,
}

impl Schedule {
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The parsed schedule, for computing run times.
    pub fn cron(&self) -> &cron::Schedule {
        &self.cron
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

const MACROS: [&str; 6] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];
const DAY_NAMES: [&str; 8] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"];
const FIELD_NAMES: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

impl FromStr for Schedule {
    type Err = String;

    fn from_str(expression: &str) -> Result<Schedule, String> {
        let trimmed = expression.trim();
        let translated = if trimmed.starts_with('@') {
            if !MACROS.contains(&trimmed) {
                return Err(format!("`{trimmed}` is not a known shorthand: use one of {}", MACROS.join(", ")));
            }
            trimmed.to_string()
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            if fields.len() != 5 {
                return Err(format!(
                    "`{trimmed}` has {} field{}, a schedule has 5: minute hour day-of-month month day-of-week",
                    fields.len(),
                    if fields.len() == 1 { "" } else { "s" }
                ));
            }
            format!("0 {} {} {} {} {}", fields[0], fields[1], fields[2], fields[3], weekdays(fields[4])?)
        };
        let cron = cron::Schedule::from_str(&translated).map_err(|e| {
            // The crate's message pictures the translated expression; keep only its reason.
            let text = e.to_string();
            let reason = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim();
            let mut message = format!("`{trimmed}` is not a valid cron schedule: {reason}");
            if !trimmed.starts_with('@') {
                message.push_str(&format!(" (fields: {})", FIELD_NAMES.join(" ")));
            }
            message
        })?;
        Ok(Schedule { expression: trimmed.to_string(), cron })
    }
}

/// Rewrites standard day-of-week numbers (0-7, Sunday both 0 and 7) as names, which mean the
/// same thing to the `cron` crate. Ranges ending on 7 are split so they never wrap.
fn weekdays(field: &str) -> Result<String, String> {
    let name = |token: &str| -> Result<String, String> {
        match token.parse::<usize>() {
            Ok(n) if n <= 7 => Ok(DAY_NAMES[n].to_string()),
            Ok(n) => Err(format!("day-of-week {n} is out of range: use 0-7 (0 and 7 are Sunday) or SUN-SAT")),
            Err(_) => Ok(token.to_string()),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (item, None),
        };
        let translated = match range.split_once('-') {
            Some((from, "7")) if step.is_none() && from.parse::<usize>().is_ok_and(|f| f <= 6) => {
                format!("{}-SAT,SUN", name(from)?)
            }
            Some((from, to)) => format!("{}-{}", name(from)?, name(to)?),
            None => name(range)?,
        };
        items.push(match step {
            Some(s) => format!("{translated}/{s}"),
            None => translated,
        });
    }
    Ok(items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cron::TimeUnitSpec;

    fn days(expr: &str) -> Vec<u32> {
        let s: Schedule = expr.parse().unwrap();
        s.cron().days_of_week().iter().collect()
    }

    #[test]
    fn accepts_standard_forms() {
        for ok in ["0 * * * *", "*/15 2-4 * * MON-FRI", "0 3 * * 0", "5 4 1 1-6 *", "@daily", " 0 3 * * * "] {
            assert!(ok.parse::<Schedule>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_wrong_forms_with_reasons() {
        let six = "0 0 * * * *".parse::<Schedule>().unwrap_err();
        assert!(six.contains("6 fields"), "{six}");
        assert!("61 * * * *".parse::<Schedule>().is_err());
        assert!("* * * * 8".parse::<Schedule>().unwrap_err().contains("day-of-week 8"));
        assert!("@fortnightly".parse::<Schedule>().unwrap_err().contains("shorthand"));
        assert!("".parse::<Schedule>().is_err());
    }

    #[test]
    fn weekday_numbers_mean_what_crontab_means() {
        // crontab: 0 and 7 are Sunday, 1 is Monday. cron crate: 1 is Sunday, 2 is Monday.
        assert_eq!(days("0 3 * * 0"), vec![1]);
        assert_eq!(days("0 3 * * 7"), vec![1]);
        assert_eq!(days("0 3 * * 1-5"), vec![2, 3, 4, 5, 6]);
        assert_eq!(days("0 3 * * 5-7"), vec![1, 6, 7]);
        assert_eq!(days("0 3 * * 6,0"), vec![1, 7]);
    }

    #[test]
    fn keeps_the_expression_as_written() {
        let s: Schedule = "0 * * * *".parse().unwrap();
        assert_eq!(s.to_string(), "0 * * * *");
    }
}
