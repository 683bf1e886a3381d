//! Byte sizes as users write them in configs: `1073741824`, `500MiB`,
//! `1GB`, `64 KiB`. Suffixes follow VictoriaMetrics' size flags: `KB`, `MB`,
//! `GB`, `TB` are powers of 1000, `KiB`, `MiB`, `GiB`, `TiB` powers of 1024;
//! case does not matter and `B` alone means bytes. One parser and two
//! formatters ([`format_size`] exact, [`format_size_short`] for progress)
//! serve every command; [`size_arg`] is the parser as a clap value parser.

/// Parses a size into bytes. The error says what was expected.
pub fn parse_size(input: &str) -> Result<u64, String> {
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim();
    let bad = || {
        format!(
            "invalid size {input:?}: expected a number of bytes with an optional unit, \
             e.g. 1073741824, 500MiB or 1GB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    };
    if number.is_empty() {
        return Err(bad());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" | "ki" => 1 << 10,
        "mib" | "mi" => 1 << 20,
        "gib" | "gi" => 1 << 30,
        "tib" | "ti" => 1 << 40,
        _ => return Err(bad()),
    };
    if let Ok(n) = number.parse::<u64>() {
        return n
            .checked_mul(multiplier)
            .ok_or_else(|| format!("invalid size {input:?}: larger than {} bytes", u64::MAX));
    }
    let f: f64 = number.parse().map_err(|_| bad())?;
    let bytes = f * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!(
            "invalid size {input:?}: larger than {} bytes",
            u64::MAX
        ));
    }
    Ok(bytes.round() as u64)
}

/// `1073741824` → `1GiB`, `1500` → `1500B`: the shortest exact spelling, for messages.
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= m && bytes.is_multiple_of(m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    format!("{bytes}B")
}

/// `1536` → `1.5 KiB`, `10` → `10 B`: one decimal, for progress and summaries.
pub fn format_size_short(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// clap value parser: a size in bytes (see [`parse_size`]).
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s)
}

/// clap value parser: a size in bytes that must fit in memory (`usize`).
pub fn size_usize_arg(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    usize::try_from(n)
        .map_err(|_| format!("invalid size {s:?}: larger than this machine can address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("1073741824").unwrap(), 1 << 30);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("64 kib").unwrap(), 64 << 10);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("10B").unwrap(), 10);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "MiB",
            "1 parsec",
            "-1",
            "1e3",
            "99999999999999999999TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert!(parse_size("1 parsec").unwrap_err().contains("500MiB"));
    }

    #[test]
    fn formats_exactly() {
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1500), "1500B");
        assert_eq!(format_size(3 << 20), "3MiB");
        assert_eq!(format_size_short(1536), "1.5 KiB");
        assert_eq!(format_size_short(10), "10 B");
    }
}
