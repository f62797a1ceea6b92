//! A real BIND (`named`, Debian's bind9) serving one zone that takes updates
//! signed with a TSIG key, read back with `dig` (AXFR); and a TCP proxy in
//! front of it that can lose the answer to the next UPDATE or drop the next
//! one unsent.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const KEY_NAME: &str = "vantage";
/// A fixed test key (32 random bytes, base64), so a wrong one can be written beside it.
pub const SECRET: &str = "q3ZCnqM4Y1e2FQW0s9x6c4M2xk7bL5qvT0pXyZk1Vd8=";
pub const WRONG_SECRET: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

pub struct Bind {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `ip:port` it answers on (TCP and UDP).
    pub addr: String,
    pub zone: String,
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bind {
    /// Starts `named` on `ip:port` (an address of an interface: BIND listens
    /// only on those) with `zone` holding `records` (zone-file lines).
    pub fn start(ip: &str, port: u16, zone: &str, records: &[&str]) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let mut z = format!(
            "$TTL 300\n@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 60 60 3600 60\n@ IN NS ns1.{zone}.\nns1 IN A 192.0.2.53\n"
        );
        for r in records {
            z += r;
            z += "\n";
        }
        std::fs::write(dir.path().join("zone.db"), z).unwrap();
        let conf = format!(
            "options {{ directory \"{d}\"; listen-on port {port} {{ {ip}; }}; listen-on-v6 {{ none; }};\n\
             pid-file \"{d}/named.pid\"; recursion no; allow-query {{ any; }}; allow-transfer {{ any; }};\n\
             notify no; dnssec-validation no; }};\n\
             controls {{ }};\n\
             key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\
             zone \"{zone}\" {{ type primary; file \"{d}/zone.db\";\n\
             update-policy {{ grant {KEY_NAME} zonesub A; grant {KEY_NAME} zonesub AAAA; }}; }};\n"
        );
        let path = dir.path().join("named.conf");
        std::fs::write(&path, conf).unwrap();
        let check = Command::new("named-checkconf")
            .arg(&path)
            .output()
            .expect("named-checkconf");
        assert!(
            check.status.success(),
            "named.conf: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new("named")
            .args(["-g", "-u", "root", "-c"])
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("named (scripts/test installs bind9)");
        let addr = format!("{ip}:{port}");
        let mut b = Bind {
            child,
            dir,
            addr: addr.clone(),
            zone: zone.to_string(),
        };
        for _ in 0..200 {
            // Its own server, not another one on the same port.
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("named exited ({status}):\n{}", b.log());
            }
            if b.log().contains("running") && TcpStream::connect(&addr).is_ok() && !b.axfr().is_empty() {
                return b;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("named did not answer on {addr}:\n{}", b.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The zone as BIND serves it (AXFR with dig): (name, type, value).
    pub fn axfr(&self) -> Vec<(String, String, String)> {
        let (ip, port) = self.addr.rsplit_once(':').unwrap();
        let out = Command::new("dig")
            .args([
                &format!("@{ip}"),
                "-p",
                port,
                &self.zone,
                "AXFR",
                "+noall",
                "+answer",
                "+tcp",
            ])
            .output()
            .expect("dig (scripts/test installs bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5 && !l.starts_with(';')).then(|| {
                    (
                        f[0].trim_end_matches('.').to_string(),
                        f[3].to_string(),
                        f[4..].join(" "),
                    )
                })
            })
            .collect()
    }

    /// (name, address) of the zone's A and AAAA records, SOA-deduplicated.
    pub fn addresses(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .axfr()
            .into_iter()
            .filter(|(n, t, _)| (t == "A" || t == "AAAA") && !n.starts_with("ns1."))
            .map(|(n, _, c)| (n, c))
            .collect();
        v.sort();
        v
    }

    /// A secret file (mode 0600) holding `secret`.
    pub fn secret_file(dir: &Path, secret: &str) -> PathBuf {
        let p = dir.join("tsig.key");
        std::fs::write(&p, format!("{secret}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}

/// A TCP proxy for DNS: it relays each message to BIND, except that it can
/// lose the answer to the next UPDATE (relayed, applied, never answered) or
/// drop the next UPDATE unsent.
pub struct Proxy {
    pub addr: String,
    lose: Arc<AtomicUsize>,
    drop_next: Arc<AtomicUsize>,
    pub updates: Arc<AtomicUsize>,
}

fn is_update(msg: &[u8]) -> bool {
    msg.len() > 2 && (msg[2] >> 3) & 0x0f == 5
}

fn read_msg(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut n = [0u8; 2];
    s.read_exact(&mut n).ok()?;
    let mut m = vec![0u8; usize::from(u16::from_be_bytes(n))];
    s.read_exact(&mut m).ok()?;
    Some(m)
}

fn write_msg(s: &mut TcpStream, m: &[u8]) -> Option<()> {
    s.write_all(&(m.len() as u16).to_be_bytes()).ok()?;
    s.write_all(m).ok()
}

impl Proxy {
    pub fn start(listen: &str, upstream: &str) -> Proxy {
        let l = TcpListener::bind(listen).expect("bind the DNS proxy");
        let (lose, drop_next, updates) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (lo, dr, up) = (lose.clone(), drop_next.clone(), updates.clone());
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let (lo, dr, up, upstream) = (lo.clone(), dr.clone(), up.clone(), upstream.clone());
                std::thread::spawn(move || {
                    while let Some(m) = read_msg(&mut c) {
                        let update = is_update(&m);
                        if update {
                            up.fetch_add(1, Ordering::SeqCst);
                            if dr.load(Ordering::SeqCst) > 0 {
                                dr.fetch_sub(1, Ordering::SeqCst);
                                return; // dropped unsent: the connection closes
                            }
                        }
                        let Ok(mut u) = TcpStream::connect(&upstream) else {
                            return;
                        };
                        if write_msg(&mut u, &m).is_none() {
                            return;
                        }
                        let Some(answer) = read_msg(&mut u) else { return };
                        if update && lo.load(Ordering::SeqCst) > 0 {
                            lo.fetch_sub(1, Ordering::SeqCst);
                            return; // applied by BIND, the answer lost
                        }
                        if write_msg(&mut c, &answer).is_none() {
                            return;
                        }
                    }
                });
            }
        });
        Proxy {
            addr: listen.to_string(),
            lose,
            drop_next,
            updates,
        }
    }

    pub fn lose_next_update(&self) {
        self.lose.fetch_add(1, Ordering::SeqCst);
    }

    pub fn drop_next_update(&self) {
        self.drop_next.fetch_add(1, Ordering::SeqCst);
    }
}
