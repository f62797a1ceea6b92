//! When a certificate stops being valid: its `notAfter`, read from the DER
//! (the few fields before it are skipped, not interpreted).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;

/// One DER element: its tag, its content and what follows it.
fn element(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Parses a UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, s: &[u8]) -> Option<SystemTime> {
    let s = std::str::from_utf8(s).ok()?.strip_suffix('Z')?;
    let digits = |r: std::ops::Range<usize>| -> Option<i32> { s.get(r)?.parse().ok() };
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy = digits(0..2)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, 2)
        }
        (0x18, 14) => (digits(0..4)?, 4),
        _ => return None,
    };
    let field = |i: usize| digits(rest + 2 * i..rest + 2 * i + 2);
    let month = time::Month::try_from(u8::try_from(field(0)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(field(1)?).ok()?).ok()?;
    let (h, m, sec) = (field(2)?, field(3)?, field(4)?);
    let at = time::Time::from_hms(u8::try_from(h).ok()?, u8::try_from(m).ok()?, u8::try_from(sec).ok()?).ok()?;
    let secs = time::PrimitiveDateTime::new(date, at).assume_utc().unix_timestamp();
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The certificate's `notAfter`, or None when the DER is not a certificate.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (0x30, cert, _) = element(cert.as_ref())? else {
        return None;
    };
    let (0x30, tbs, _) = element(cert)? else { return None };
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2; // version
    }
    for _ in 0..3 {
        rest = element(rest)?.2; // serial number, signature algorithm, issuer
    }
    let (0x30, validity, _) = element(rest)? else {
        return None;
    };
    let (_, _, after) = element(validity)?; // notBefore
    let (tag, value, _) = element(after)?;
    time(tag, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_time_forms() {
        let t = |tag, s: &str| time(tag, s.as_bytes()).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t(0x17, "261202003316Z"), Some(1_796_171_596));
        assert_eq!(t(0x18, "20261202003316Z"), Some(1_796_171_596));
        assert_eq!(t(0x17, "700101000000Z"), Some(0));
        assert_eq!(t(0x17, "261302003316Z"), None, "month 13");
        assert_eq!(t(0x17, "2612020033Z"), None, "too short");
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])),
            None
        );
        assert_eq!(not_after(&CertificateDer::from(vec![0xff; 40])), None);
    }
}
