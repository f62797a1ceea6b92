//! DNS latency, per provider: three release agents fail an endpoint over 30
//! times, writing through each provider in turn, in one run:
//! - Cloudflare, to the strict API double on loopback;
//! - Route 53, to moto behind the SigV4 gate;
//! - RFC 2136, to a real BIND (named).
//!
//! For each it measures three things: the time from the quorum decision being
//! committed (its log time) to the provider acknowledging the delete (the
//! provider's own log: the double's request log, the gate's, BIND's), the
//! whole time from the endpoint's death, and the write requests each failover
//! costs.
//!
//! Run: `cargo bench --bench dns` (`-- cloudflare`, `-- route53` or
//! `-- rfc2136` for one). Prints a table; asserts nothing but completion.

#[path = "../tests/support/bind.rs"]
mod bind;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/moto.rs"]
mod moto;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Cluster, Port};

const ZONE: &str = "example.test";
const TOKEN: &str = "bench-token-5b0d";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64() * 1000.0
}

/// One provider under measurement.
trait Target {
    fn name(&self) -> &'static str;
    /// The `[dns]` tables of the agents' configuration.
    fn dns(&self) -> String;
    /// How many of the two managed addresses the provider holds now.
    fn managed(&self) -> usize;
    /// A position in the provider's log, to read what came after it.
    fn mark(&self) -> usize;
    /// The wall times (ms) of the writes acknowledged since `mark`.
    fn writes_since(&self, mark: usize) -> Vec<f64>;
}

struct Cf {
    d: cfdouble::Double,
    wall0: f64,
    token: std::path::PathBuf,
}

impl Target for Cf {
    fn name(&self) -> &'static str {
        "cloudflare (strict double)"
    }
    fn dns(&self) -> String {
        format!(
            "[dns]\nprovider = \"cloudflare\"\nreconcile_interval = \"30s\"\n\
             [dns.cloudflare]\napi_base = \"{}\"\nzone = \"{ZONE}\"\ntoken_file = \"{}\"\n",
            self.d.base_url(),
            self.token.display()
        )
    }
    fn managed(&self) -> usize {
        self.d
            .records(ZONE)
            .iter()
            .filter(|r| r.content.starts_with("127.0.96."))
            .count()
    }
    fn mark(&self) -> usize {
        self.d.requests().len()
    }
    fn writes_since(&self, mark: usize) -> Vec<f64> {
        self.d.requests()[mark..]
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| self.wall0 + r.at.as_secs_f64() * 1000.0)
            .collect()
    }
}

struct R53 {
    m: moto::Moto,
    creds: std::path::PathBuf,
}

impl Target for R53 {
    fn name(&self) -> &'static str {
        "route53 (moto behind the SigV4 gate)"
    }
    fn dns(&self) -> String {
        format!(
            "[dns]\nprovider = \"route53\"\nreconcile_interval = \"30s\"\n\
             [dns.route53]\nzone = \"{ZONE}\"\nendpoint = \"{}\"\ncredentials_file = \"{}\"\n\
             profile = \"vantage\"\ninstance_metadata = false\ninsync_timeout = \"0s\"\n",
            self.m.gate,
            self.creds.display()
        )
    }
    fn managed(&self) -> usize {
        self.m.view().iter().filter(|(_, c)| c.starts_with("127.0.96.")).count()
    }
    fn mark(&self) -> usize {
        self.m.log().len()
    }
    fn writes_since(&self, mark: usize) -> Vec<f64> {
        self.m.log()[mark..]
            .iter()
            .filter(|e| e["method"] == "POST")
            .filter_map(|e| e["t"].as_f64().map(|t| t * 1000.0))
            .collect()
    }
}

struct Dns2136 {
    b: bind::Bind,
    secret: std::path::PathBuf,
}

/// BIND's log time stamp (`02-Dec-2026 07:37:04.806`, UTC on this machine) in ms.
fn bind_time(line: &str) -> Option<f64> {
    let (date, clock) = (line.get(..11)?, line.get(12..24)?);
    let mut parts = date.split('-');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == month)? + 1;
    let t = humantime::parse_rfc3339(&format!("{year}-{m:02}-{day}T{clock}Z")).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
}

impl Target for Dns2136 {
    fn name(&self) -> &'static str {
        "rfc2136 (BIND)"
    }
    fn dns(&self) -> String {
        format!(
            "[dns]\nprovider = \"rfc2136\"\nreconcile_interval = \"30s\"\n\
             [dns.rfc2136]\nserver = \"{}\"\nzone = \"{ZONE}\"\ntsig_key_name = \"{}\"\ntsig_secret_file = \"{}\"\n",
            self.b.addr,
            bind::KEY_NAME,
            self.secret.display()
        )
    }
    fn managed(&self) -> usize {
        self.b
            .addresses()
            .iter()
            .filter(|(_, c)| c.starts_with("127.0.96."))
            .count()
    }
    fn mark(&self) -> usize {
        self.b.log().lines().count()
    }
    fn writes_since(&self, mark: usize) -> Vec<f64> {
        // One UPDATE logs a line per record it changes: one time per message.
        let mut times: Vec<f64> = self
            .b
            .log()
            .lines()
            .skip(mark)
            .filter(|l| l.contains("updating zone"))
            .filter_map(bind_time)
            .collect();
        times.dedup();
        times
    }
}

fn measure(t: &dyn Target, net: u8) {
    let dns = t.dns();
    let mut c = Cluster::with_extra(net, 3, "", move |_| {
        format!(
            "[probe]\ninterval = \"250ms\"\ntimeout = \"200ms\"\nfall = 3\nrise = 2\nheartbeat = \"1s\"\n\n\
             [decision]\nobservation_ttl = \"3s\"\nhold_down = \"0s\"\npanic_threshold = 1.0\n\n{dns}\n\
             [[pools]]\nname = \"web\"\nhostnames = [\"www.example.test\"]\ncheck = {{ kind = \"tcp\", port = 7700 }}\n\
             [[pools.endpoints]]\naddress = \"127.0.96.200\"\n[[pools.endpoints]]\naddress = \"127.0.96.201\"\n"
        )
    });
    // The endpoints are the same addresses for every provider; the agents are not.
    let _b = Port::open("127.0.96.201:7700".parse().unwrap());
    let mut a = Some(Port::open("127.0.96.200:7700".parse().unwrap()));
    c.start_all();
    c.bootstrap();
    c.wait_leader(&[1, 2, 3], Duration::from_secs(30));
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let at = Instant::now();
        while !f() {
            assert!(
                at.elapsed() < Duration::from_secs(60),
                "{}: timed out: {what}",
                t.name()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait("both records", &|| t.managed() == 2);
    let (mut commit_to_ack, mut death_to_ack, mut writes) = (vec![], vec![], vec![]);
    // Deaths land at random points of the probe interval, not in step with it.
    let mut seed = (now_ms() as u64) | 1;
    for _ in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(500 + seed % 250));
        let mark = t.mark();
        let died = now_ms();
        a.take().unwrap().close();
        // The provider's log first: it is cheap to read, the provider's view is not.
        wait("the delete", &|| !t.writes_since(mark).is_empty() && t.managed() == 1);
        let acks = t.writes_since(mark);
        let ack = *acks.last().unwrap();
        let hist = c.cli_json(&[
            "history",
            "--addr",
            c.addr(1),
            "--endpoint",
            "web/127.0.96.200",
            "--limit",
            "1000",
        ]);
        let decided = hist["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "decision" && e["to"] == "down")
            .map(|e| e["log_time_ms"].as_f64().unwrap())
            .next_back()
            .unwrap();
        commit_to_ack.push(ack - decided);
        death_to_ack.push(ack - died);
        writes.push(acks.len() as f64);
        let mark = t.mark();
        a = Some(Port::open("127.0.96.200:7700".parse().unwrap()));
        wait("the re-add", &|| !t.writes_since(mark).is_empty() && t.managed() == 2);
    }
    for (measure, v) in [
        ("decision committed -> provider ack", &mut commit_to_ack),
        ("endpoint death -> provider ack", &mut death_to_ack),
        ("write requests per failover", &mut writes),
    ] {
        let (p50, p95, p99) = (pct(v, 0.5), pct(v, 0.95), pct(v, 0.99));
        println!("{:<38} {measure:<36} {p50:>8.1} {p95:>8.1} {p99:>8.1}", t.name());
    }
}

fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let want = |name: &str| only.as_deref().is_none_or(|o| name.starts_with(o));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    println!("Vantage DNS latency per provider: 3 release agents, interval 250ms, fall 3, 30 failovers each; ms");
    println!(
        "{:<38} {:<36} {:>8} {:>8} {:>8}",
        "provider", "measure", "p50", "p95", "p99"
    );
    if want("cloudflare") {
        let wall0 = now_ms();
        let d = rt.block_on(cfdouble::start(
            cfdouble::DoubleConfig::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/cloudflare/dns-openapi.json"
            ))
            .token(TOKEN)
            .zone(ZONE, "9a7806061c88ada191ed06f989cc3dac"),
        ));
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let t = Cf { d, wall0, token };
        measure(&t, 96);
        assert!(t.d.violations().is_empty(), "{:?}", t.d.violations());
    }
    if want("route53") {
        let m = moto::Moto::start("127.0.97.50", ZONE);
        let creds = moto::Moto::credentials_file(dir.path(), moto::AWS_SECRET);
        measure(&R53 { m, creds }, 97);
    }
    if want("rfc2136") {
        let b = bind::Bind::start("127.0.0.1", 5398, ZONE, &[]);
        let secret = bind::Bind::secret_file(dir.path(), bind::SECRET);
        measure(&Dns2136 { b, secret }, 98);
    }
}
