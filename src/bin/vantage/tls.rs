//! `vantage tls`: the cluster's CA and the certificates of its nodes,
//! operators and readers.

use vantage::tls::issue::{self, Validity};
use vantage::tls::{Identity, Role};

use crate::args::{Issued, TlsCmd};
use crate::Failure;

pub fn run(cmd: TlsCmd) -> Result<(), Failure> {
    match cmd {
        TlsCmd::Ca { dir, cluster, days } => {
            let files = issue::new_ca(&dir, &cluster, Validity { days, backdate_days: 0 }).map_err(Failure::usage)?;
            say!(
                "CA of cluster {cluster}: {} (key {}, mode 0600; keep it off the agents)",
                files.cert().display(),
                files.key().display()
            );
            Ok(())
        }
        TlsCmd::Node { dir, id, addrs, issued } => {
            if id == 0 {
                return Err(Failure::usage("--id: expected a positive node id, got 0"));
            }
            let (out, validity) = issued.resolve(&dir);
            let (cert, key) = issue::issue(&dir, &Identity::Node(id), &addrs, &format!("node{id}"), &out, validity)
                .map_err(Failure::usage)?;
            say!("node {id}: {} (key {})", cert.display(), key.display());
            Ok(())
        }
        TlsCmd::Client {
            dir,
            name,
            role,
            issued,
        } => {
            let role = Role::parse(&role)
                .ok_or_else(|| Failure::usage(format!("--role: expected operator or reader, got {role:?}")))?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(Failure::usage(format!(
                    "--name: expected letters, digits, '-', '_' or '.', got {name:?}"
                )));
            }
            let (out, validity) = issued.resolve(&dir);
            let who = Identity::Client {
                name: name.clone(),
                role,
            };
            let (cert, key) = issue::issue(&dir, &who, &[], &name, &out, validity).map_err(Failure::usage)?;
            say!("{who}: {} (key {})", cert.display(), key.display());
            Ok(())
        }
    }
}

impl Issued {
    /// The output directory (the CA's by default) and the validity.
    fn resolve(self, ca_dir: &std::path::Path) -> (std::path::PathBuf, Validity) {
        let out = self.out.unwrap_or_else(|| ca_dir.to_path_buf());
        (
            out,
            Validity {
                days: self.days,
                backdate_days: self.backdate_days,
            },
        )
    }
}
