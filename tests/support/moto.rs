//! moto's Route 53 (from PyPI's `moto[server]`, an implementation of the AWS
//! API nobody here wrote) behind `sigv4_gate.py`, which checks every
//! signature with botocore's signer and can throttle or lose writes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const AWS_KEY: &str = "AKIAVANTAGETEST00001";
pub const AWS_SECRET: &str = "s3cr3t/Vantage+Conformance0000000000000";

/// moto's server and the gate in front of it; killed on drop.
pub struct Moto {
    children: Vec<Child>,
    pub moto: String,
    pub gate: String,
    pub zone_id: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Drop for Moto {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub const BOTO: &str = "import boto3, sys, json\n\
    r53 = boto3.client('route53', endpoint_url=sys.argv[1], region_name='us-east-1', \
    aws_access_key_id='test', aws_secret_access_key='test')\n";

/// Waits until `addr` accepts connections.
pub fn wait_port(addr: &str) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

impl Moto {
    /// Starts moto (`moto_server`) on `host:5000` and the gate on
    /// `host:5001`, and creates the hosted zone `zone`.
    pub fn start(host: &str, zone: &str) -> Moto {
        let host = host.to_string();
        let moto = format!("{host}:5000");
        let gate = format!("{host}:5001");
        let m = Command::new("moto_server")
            .args(["-H", &host, "-p", "5000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (scripts/test installs moto[server])");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/sigv4_gate.py");
        let mut g = Command::new("python3")
            .args([script, &host, "5001", &format!("http://{moto}"), AWS_KEY, AWS_SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the gate");
        let mut first = String::new();
        BufReader::new(g.stdout.as_mut().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("listening"), "the gate: {first}");
        // Keep draining the gate's log so it never blocks on a full pipe.
        let out = g.stdout.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    keep.lock().unwrap().push(v);
                }
            }
        });
        wait_port(&moto);
        let mut me = Moto {
            children: vec![m, g],
            moto: format!("http://{moto}"),
            gate: format!("http://{gate}"),
            zone_id: String::new(),
            log,
        };
        me.zone_id = python(
            &format!("{BOTO}z = r53.create_hosted_zone(Name='{zone}', CallerReference='vantage')\nprint(z['HostedZone']['Id'].split('/')[-1])"),
            &[&me.moto],
        );
        me
    }

    /// Every A/AAAA value, as moto's API lists them.
    pub fn view(&self) -> Vec<(String, String)> {
        let text = python(
            &format!(
                "{BOTO}out = []\nfor s in r53.list_resource_record_sets(HostedZoneId=sys.argv[2])['ResourceRecordSets']:\n\
                 \x20   if s['Type'] in ('A', 'AAAA'):\n\
                 \x20       out += [[s['Name'].rstrip('.'), r['Value']] for r in s.get('ResourceRecords', [])]\n\
                 print(json.dumps(out))"
            ),
            &[&self.moto, &self.zone_id],
        );
        serde_json::from_str(&text).unwrap()
    }

    /// Someone else's records, written straight to moto.
    pub fn upsert(&self, name: &str, values: &[&str]) {
        let records: Vec<String> = values.iter().map(|v| format!("{{'Value': '{v}'}}")).collect();
        python(
            &format!(
                "{BOTO}r53.change_resource_record_sets(HostedZoneId=sys.argv[2], ChangeBatch={{'Changes': [{{'Action': 'UPSERT', \
                 'ResourceRecordSet': {{'Name': '{name}.', 'Type': 'A', 'TTL': 300, 'ResourceRecords': [{}]}}}}]}})",
                records.join(", ")
            ),
            &[&self.moto, &self.zone_id],
        );
    }

    /// The gate's log of requests so far: one JSON object per request.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log.lock().unwrap().clone()
    }

    /// Queues faults at the gate, or reads its counters.
    pub fn gate(&self, faults: Option<&str>) -> serde_json::Value {
        let script = "import sys, urllib.request\n\
            data = sys.argv[2].encode() if len(sys.argv) > 2 else None\n\
            print(urllib.request.urlopen(urllib.request.Request(sys.argv[1] + '/__gate', data=data)).read().decode())";
        let url = self.gate.clone();
        let mut args = vec![url.as_str()];
        if let Some(f) = faults {
            args.push(f);
        }
        serde_json::from_str(&python(script, &args)).unwrap()
    }

    /// A credentials file (mode 0600) holding `secret` for the gate's key id.
    pub fn credentials_file(dir: &Path, secret: &str) -> PathBuf {
        let p = dir.join("aws-credentials");
        std::fs::write(
            &p,
            format!("[vantage]\naws_access_key_id = {AWS_KEY}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}
