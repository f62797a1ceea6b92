//! The zone-file provider: writes a standard RFC 1035 master file that BIND,
//! Knot, NSD or CoreDNS can serve. The file is replaced atomically (write,
//! fsync, rename) and its SOA serial grows with every write.
//!
//! The file is Vantage's: it holds the SOA, the NS records, the operator's
//! static lines (copied verbatim) and the managed A/AAAA records.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Change, Existing, Outcome, Owned, Provider, ProviderError, Record, RecordType};

/// Settings of the zone file.
#[derive(Clone, Debug)]
pub struct ZoneSettings {
    pub path: PathBuf,
    /// Zone apex without the trailing dot, e.g. `example.com`.
    pub origin: String,
    pub ttl: u32,
    /// NS targets (fully qualified).
    pub nameservers: Vec<String>,
    /// SOA RNAME, e.g. `hostmaster.example.com`.
    pub hostmaster: String,
    /// Lines copied into the file as they are.
    pub static_records: Vec<String>,
}

/// Writes and reads one zone file.
pub struct ZoneFile {
    s: ZoneSettings,
    /// Serialises writers inside this process.
    lock: tokio::sync::Mutex<()>,
}

fn fq(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn id_of(r: &Record) -> String {
    format!("{}|{}|{}", r.name, r.rtype.as_str(), r.content)
}

/// Today's date as YYYYMMDD (UTC), for the conventional serial.
fn today() -> u32 {
    date_of(SystemTime::now())
}

/// The UTC date of `t` as YYYYMMDD, e.g. 20261202. A time before 1970 counts
/// as 1970-01-01; a year past 9999 (which humantime does not print) gives 0.
fn date_of(t: SystemTime) -> u32 {
    use std::fmt::Write;
    let mut stamp = String::new();
    // `YYYY-MM-DDTHH:MM:SSZ`
    if write!(stamp, "{}", humantime::format_rfc3339_seconds(t.max(UNIX_EPOCH))).is_err() {
        return 0;
    }
    stamp
        .get(..10)
        .unwrap_or_default()
        .replace('-', "")
        .parse()
        .unwrap_or(0)
}

impl ZoneFile {
    pub fn new(s: ZoneSettings) -> ZoneFile {
        ZoneFile {
            s,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the managed records and the current serial from the file.
    fn read(&self) -> Result<(Vec<Record>, u32), ProviderError> {
        let text = match std::fs::read_to_string(&self.s.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
            Err(e) => {
                return Err(ProviderError::Permanent(format!(
                    "cannot read zone file {}: {e}",
                    self.s.path.display()
                )))
            }
        };
        let mut records = Vec::new();
        let mut serial = 0;
        let mut managed = false;
        for line in text.lines() {
            let line = line.trim();
            if line == "; managed by vantage: begin" {
                managed = true;
                continue;
            }
            if line == "; managed by vantage: end" {
                managed = false;
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let Some(pos) = fields.iter().position(|f| *f == "SOA") {
                // MNAME, RNAME, then the serial (after an optional "(").
                serial = fields[pos + 1..]
                    .iter()
                    .skip(2)
                    .find_map(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            if !managed || fields.len() != 5 || fields[2] != "IN" {
                continue;
            }
            let rtype = match fields[3] {
                "A" => RecordType::A,
                "AAAA" => RecordType::AAAA,
                _ => continue,
            };
            records.push(Record {
                name: fields[0].trim_end_matches('.').to_ascii_lowercase(),
                rtype,
                content: fields[4].to_string(),
            });
        }
        Ok((records, serial))
    }

    fn render(&self, records: &BTreeSet<Record>, serial: u32) -> String {
        let s = &self.s;
        let mut out = format!(
            "; Zone {origin}, written by Vantage. Edit the configuration, not this file.\n\
             $ORIGIN {fqo}\n$TTL {ttl}\n\
             @ IN SOA {ns} {hm} ( {serial} 3600 600 604800 {ttl} )\n",
            origin = s.origin,
            fqo = fq(&s.origin),
            ttl = s.ttl,
            ns = fq(s.nameservers.first().map(String::as_str).unwrap_or("localhost")),
            hm = fq(&s.hostmaster),
        );
        for ns in &s.nameservers {
            out += &format!("@ IN NS {}\n", fq(ns));
        }
        for line in &s.static_records {
            out += line;
            out.push('\n');
        }
        out += "; managed by vantage: begin\n";
        for r in records {
            out += &format!("{} {} IN {} {}\n", fq(&r.name), s.ttl, r.rtype.as_str(), r.content);
        }
        out += "; managed by vantage: end\n";
        out
    }

    /// Replaces the file atomically: a reader sees the old or the new zone, never half.
    fn write(&self, text: &str) -> std::io::Result<()> {
        let path = &self.s.path;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("vantage-tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Provider for ZoneFile {
    fn describe(&self) -> String {
        format!("zone file {} ({})", self.s.path.display(), self.s.origin)
    }

    async fn list(&self, owned: &Owned) -> Result<Vec<Existing>, ProviderError> {
        let _g = self.lock.lock().await;
        let (records, _) = self.read()?;
        Ok(records
            .into_iter()
            .filter(|r| owned.owns(r))
            .map(|r| Existing {
                id: id_of(&r),
                record: r,
            })
            .collect())
    }

    async fn apply(&self, changes: &[Change]) -> Result<Vec<(Change, Outcome)>, ProviderError> {
        let _g = self.lock.lock().await;
        let (records, serial) = self.read()?;
        let mut set: BTreeSet<Record> = records.into_iter().collect();
        for c in changes {
            match c {
                Change::Delete(e) => {
                    set.remove(&e.record);
                }
                Change::Create(r) => {
                    set.insert(r.clone());
                }
            }
        }
        let serial = (serial + 1).max(today().saturating_mul(100));
        self.write(&self.render(&set, serial))
            .map_err(|e| ProviderError::Transient(format!("cannot write zone file {}: {e}", self.s.path.display())))?;
        Ok(changes.iter().map(|c| (c.clone(), Outcome::Applied)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, content: &str) -> Record {
        Record::new(name, content)
    }

    #[tokio::test]
    async fn zone_file_round_trips_and_bumps_the_serial() {
        let dir = tempfile::tempdir().unwrap();
        let z = ZoneFile::new(ZoneSettings {
            path: dir.path().join("example.com.zone"),
            origin: "example.com".into(),
            ttl: 60,
            nameservers: vec!["ns1.example.net".into()],
            hostmaster: "hostmaster.example.com".into(),
            static_records: vec!["mail 300 IN A 192.0.2.25".into()],
        });
        let mut owned = Owned::default();
        owned.names.insert(
            "www.example.com".into(),
            ["10.0.0.1", "2001:db8::1"].map(String::from).into(),
        );
        let creates = vec![
            Change::Create(rec("www.example.com", "10.0.0.1")),
            Change::Create(rec("www.example.com", "2001:db8::1")),
        ];
        z.apply(&creates).await.unwrap();
        let (_, s1) = z.read().unwrap();
        let listed = z.list(&owned).await.unwrap();
        assert_eq!(listed.len(), 2);
        z.apply(&[Change::Delete(listed[0].clone())]).await.unwrap();
        let (records, s2) = z.read().unwrap();
        assert_eq!(records.len(), 1);
        assert!(s2 > s1, "serial {s1} -> {s2}");
        let text = std::fs::read_to_string(dir.path().join("example.com.zone")).unwrap();
        assert!(text.contains("mail 300 IN A 192.0.2.25"), "{text}");
    }

    #[test]
    fn today_is_a_plausible_date() {
        let t = today();
        assert!((20_240_101..21_000_101).contains(&t), "{t}");
    }

    #[test]
    fn date_of_is_the_utc_calendar_date() {
        let at = |secs: u64| UNIX_EPOCH + std::time::Duration::from_secs(secs);
        // 2026-12-02T23:59:59Z
        assert_eq!(date_of(at(1_796_255_999)), 20_261_202);
        // 2026-12-03T00:00:00Z
        assert_eq!(date_of(at(1_796_256_000)), 20_261_203);
        // 2024-02-29T00:00:00Z
        assert_eq!(date_of(at(1_709_164_800)), 20_240_229);
        assert_eq!(date_of(UNIX_EPOCH), 19_700_101);
        assert_eq!(date_of(UNIX_EPOCH - std::time::Duration::from_secs(86_400)), 19_700_101);
    }
}
