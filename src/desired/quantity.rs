//! Sizes (`4GiB`) and durations (`7d`) as written in the desired state.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

/// A byte size. Prints as written; compares by value.
#[derive(Debug, Clone, Serialize)]
#[serde(into = "String")]
pub struct Size {
    text: String,
    bytes: u64,
}

impl Size {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl PartialEq for Size {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.text
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Size, String> {
        let bytes = text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|_| format!("`{text}` is not a size: write a number and a unit, such as `4GiB` or `700MB`"))?
            .as_u64();
        if bytes == 0 {
            return Err(format!("`{text}` is zero: give a size above zero"));
        }
        Ok(Size { text: text.trim().to_string(), bytes })
    }
}

/// A length of time. Prints as written; compares by value.
#[derive(Debug, Clone, Serialize)]
#[serde(into = "String")]
pub struct Period {
    text: String,
    duration: Duration,
}

impl Period {
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl PartialEq for Period {
    fn eq(&self, other: &Self) -> bool {
        self.duration == other.duration
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<Period> for String {
    fn from(p: Period) -> String {
        p.text
    }
}

impl FromStr for Period {
    type Err = String;

    fn from_str(text: &str) -> Result<Period, String> {
        let duration = humantime::parse_duration(text.trim()).map_err(|e| {
            format!("`{text}` is not a duration ({e}): write a number and a unit, such as `7d`, `36h` or `2w`")
        })?;
        if duration.is_zero() {
            return Err(format!("`{text}` is zero: give a duration above zero"));
        }
        Ok(Period { text: text.trim().to_string(), duration })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("4GiB".parse::<Size>().unwrap().bytes(), 4 << 30);
        assert_eq!("700MB".parse::<Size>().unwrap().bytes(), 700_000_000);
        assert_eq!("4 GiB".parse::<Size>().unwrap(), "4096MiB".parse::<Size>().unwrap());
        for bad in ["", "GiB", "4 parsecs", "0", "-1GiB"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
    }

    #[test]
    fn periods() {
        assert_eq!("7d".parse::<Period>().unwrap().duration(), Duration::from_secs(7 * 86400));
        assert_eq!("48h".parse::<Period>().unwrap(), "2d".parse::<Period>().unwrap());
        for bad in ["", "7", "seven days", "0s"] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }
}
