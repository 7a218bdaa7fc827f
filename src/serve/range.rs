//! The `Range: bytes=` request header (RFC 9110 §14): one range is served
//! as 206; several ranges, or a header we do not understand, get the whole
//! file (which the RFC allows); a range past the end is 416.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ByteRange {
    Full,
    /// Inclusive byte offsets.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn parse(header: &str, size: u64) -> ByteRange {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => ByteRange::Unsatisfiable,
            Some(_) if size == 0 => ByteRange::Unsatisfiable,
            Some(n) => ByteRange::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => ByteRange::Full,
        },
        (false, _) => {
            let Some(start) = num(first) else {
                return ByteRange::Full;
            };
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                num(last)
            };
            match end {
                None => ByteRange::Full,
                Some(end) if end < start => ByteRange::Full,
                Some(_) if start >= size => ByteRange::Unsatisfiable,
                Some(end) => ByteRange::Part {
                    start,
                    end: end.min(size - 1),
                },
            }
        }
        (true, true) => ByteRange::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(
            parse("bytes=0-9", 100),
            ByteRange::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse("bytes=90-", 100),
            ByteRange::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse("bytes=-10", 100),
            ByteRange::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse("bytes=-1000", 100),
            ByteRange::Part { start: 0, end: 99 }
        );
        assert_eq!(
            parse("bytes=50-5000", 100),
            ByteRange::Part { start: 50, end: 99 }
        );
        assert_eq!(parse("bytes=100-", 100), ByteRange::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), ByteRange::Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), ByteRange::Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 100), ByteRange::Full);
        assert_eq!(parse("bytes=0-1,5-6", 100), ByteRange::Full);
        assert_eq!(parse("items=0-1", 100), ByteRange::Full);
        assert_eq!(parse("bytes=x-1", 100), ByteRange::Full);
    }
}
