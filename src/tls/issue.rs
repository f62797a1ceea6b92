//! Issuing the cluster's certificates (`vantage tls`): a CA, then one
//! certificate per node and per operator or reader, each naming its holder
//! in a SAN URI (see [`super::uri`]). Keys are ECDSA P-256, written 0600.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::{uri, Identity};

/// When a certificate is valid: from `backdate_days` ago for `days` days.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub days: u32,
    /// Shifts the whole period into the past (an already expired certificate, for tests).
    pub backdate_days: u32,
}

impl Default for Validity {
    fn default() -> Self {
        Validity {
            days: 365,
            backdate_days: 0,
        }
    }
}

impl Validity {
    fn apply(&self, p: &mut CertificateParams) {
        // An hour of slack for clocks that are a little behind.
        let start = OffsetDateTime::now_utc() - Duration::days(i64::from(self.backdate_days)) - Duration::hours(1);
        p.not_before = start;
        p.not_after = start + Duration::days(i64::from(self.days)) + Duration::hours(1);
    }
}

/// The files of a CA directory.
pub struct CaFiles {
    pub dir: PathBuf,
}

impl CaFiles {
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    /// The cluster name the CA issues for.
    pub fn cluster(&self) -> PathBuf {
        self.dir.join("cluster")
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Writes `data` to `path`; `private` files are created mode 0600 and never
/// overwritten in place with wider permissions.
fn write(path: &Path, data: &str, private: bool) -> Result<(), String> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| err(path, e))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(path, e))?;
    }
    f.write_all(data.as_bytes()).map_err(|e| err(path, e))
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vantage");
    dn.push(DnType::CommonName, format!("Vantage CA {cluster}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn valid_cluster(cluster: &str) -> Result<(), String> {
    let ok = !cluster.is_empty()
        && cluster.len() <= 63
        && cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--cluster: expected a name of letters, digits, '-', '_' or '.', got {cluster:?}"
        ))
    }
}

/// Creates a CA for `cluster` in `dir` (refusing to replace an existing one).
pub fn new_ca(dir: &Path, cluster: &str, validity: Validity) -> Result<CaFiles, String> {
    valid_cluster(cluster)?;
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let files = CaFiles { dir: dir.to_path_buf() };
    if files.key().exists() {
        return Err(err(&files.key(), "a CA key is already there; not replacing it"));
    }
    let key = KeyPair::generate().map_err(|e| err(&files.key(), e))?;
    let mut p = ca_params(cluster);
    Validity {
        days: validity.days.max(1),
        ..validity
    }
    .apply(&mut p);
    let cert = p.self_signed(&key).map_err(|e| err(&files.cert(), e))?;
    write(&files.key(), &key.serialize_pem(), true)?;
    write(&files.cert(), &cert.pem(), false)?;
    write(&files.cluster(), &format!("{cluster}\n"), false)?;
    Ok(files)
}

/// Issues a certificate for `who` signed by the CA in `ca_dir`, written as
/// `out/NAME.pem` and `out/NAME.key`; `hosts` become IP or DNS SANs (so
/// ordinary TLS clients such as grpcurl can check the name too).
pub fn issue(
    ca_dir: &Path,
    who: &Identity,
    hosts: &[String],
    name: &str,
    out: &Path,
    validity: Validity,
) -> Result<(PathBuf, PathBuf), String> {
    let ca = CaFiles {
        dir: ca_dir.to_path_buf(),
    };
    let cluster = std::fs::read_to_string(ca.cluster()).map_err(|e| err(&ca.cluster(), e))?;
    let cluster = cluster.trim();
    let ca_key_pem = std::fs::read_to_string(ca.key()).map_err(|e| err(&ca.key(), e))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| err(&ca.key(), e))?;
    let issuer = Issuer::new(ca_params(cluster), ca_key);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Vantage");
    dn.push(DnType::CommonName, who.to_string());
    p.distinguished_name = dn;
    let mut sans = vec![SanType::URI(
        uri(cluster, who)
            .try_into()
            .map_err(|e| format!("cannot name {who} in a certificate: {e}"))?,
    )];
    for h in hosts {
        let host = h.rsplit_once(':').map(|(h, _)| h).unwrap_or(h).trim_matches(['[', ']']);
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|e| format!("--addr {h}: not a host name: {e}"))?,
            ),
        });
    }
    p.subject_alt_names = sans;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    validity.apply(&mut p);
    std::fs::create_dir_all(out).map_err(|e| err(out, e))?;
    let (cert_path, key_path) = (out.join(format!("{name}.pem")), out.join(format!("{name}.key")));
    let key = KeyPair::generate().map_err(|e| err(&key_path, e))?;
    let cert = p.signed_by(&key, &issuer).map_err(|e| err(&cert_path, e))?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::super::{identity_in, load_certs, Role, Tls, TlsFiles};
    use super::*;

    #[test]
    fn issued_certificates_name_their_holder_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path(), "lab", Validity::default()).unwrap();
        assert!(
            new_ca(dir.path(), "lab", Validity::default()).is_err(),
            "a CA is never replaced"
        );
        let node = Identity::Node(2);
        let (cert, key) = issue(
            dir.path(),
            &node,
            &["127.0.0.2:7101".into()],
            "node2",
            dir.path(),
            Validity::default(),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = std::fs::metadata(ca.key()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let certs = load_certs(&cert).unwrap();
        assert_eq!(identity_in(&certs[0], "lab"), Some(node.clone()));
        assert_eq!(identity_in(&certs[0], "other"), None);
        let tls = Tls::load(TlsFiles {
            ca: ca.cert(),
            cert,
            key: key.clone(),
        })
        .unwrap();
        assert_eq!((tls.cluster(), tls.identity()), ("lab".to_string(), node));
        // A key other users can read is refused, naming the file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = super::super::load_key(&key).unwrap_err().to_string();
            assert!(e.contains("node2.key") && e.contains("chmod 600"), "{e}");
        }
        // The expiry is read back from the certificate.
        let left = super::super::not_after(&certs[0])
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!((364 * 86_400..366 * 86_400).contains(&left.as_secs()), "{left:?}");
        assert_eq!(tls.expiry_warning(30), None);
        assert!(tls.expiry_warning(400).unwrap().contains("expires in 364 days"));
        let op = Identity::Client {
            name: "alice".into(),
            role: Role::Operator,
        };
        let (cert, _) = issue(dir.path(), &op, &[], "alice", dir.path(), Validity::default()).unwrap();
        assert_eq!(identity_in(&load_certs(&cert).unwrap()[0], "lab"), Some(op));
    }
}
