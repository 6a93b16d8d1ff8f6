//! Parsing sizes (`64KiB`, `2GiB`, `4096`) and durations (`10s`, `250ms`) given by users.

use std::time::Duration;

/// Splits `"64KiB"` into `(64, "KiB")`; `None` without leading digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    Some((digits.parse().ok()?, unit.trim()))
}

/// Parses a byte size: a number with an optional suffix B, KiB, MiB, GiB (powers of 1024)
/// or KB, MB, GB (powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)
        .ok_or_else(|| format!("{text:?} is not a size (e.g. 4096, 64KiB, 2GiB)"))?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a number with a suffix us, ms, s, m, h or d (`10s`, `250ms`, `7d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = split_number(text)
        .ok_or_else(|| format!("{text:?} is not a duration (e.g. 10s, 250ms)"))?;
    match unit {
        "us" => Ok(Duration::from_micros(number)),
        "ms" => Ok(Duration::from_millis(number)),
        "s" => Ok(Duration::from_secs(number)),
        "m" | "h" | "d" => {
            let seconds = match unit {
                "m" => 60,
                "h" => 3600,
                _ => 86_400,
            };
            number
                .checked_mul(seconds)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("{text:?} is too long"))
        }
        _ => Err(format!("{text:?} needs a unit: us, ms, s, m, h or d")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse_and_bad_ones_explain_themselves() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert!(parse_size("12XB")
            .unwrap_err()
            .contains("unknown size unit"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
    }
}
