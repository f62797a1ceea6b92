//! Deterministic simulation of a Vantage cluster.
//!
//! Real agents (`vantage::serve_agent`: the state machine, the decision
//! rules, the proposer, the reconciler, sled in temporary directories) run
//! as hosts of a [turmoil] simulation: one thread, a simulated network and
//! clock, and every random choice (message latency, the fault schedule,
//! tokio's `select!` order, openraft's election timeouts) drawn from one
//! seed. The same seed gives the same run, byte for byte.
//!
//! What is simulated around the agents:
//! - endpoints: hosts that accept TCP on port 80; the agents' TCP checks
//!   connect to them over the simulated network. An endpoint dies (its host
//!   crashes: connections are refused), comes back, or is cut off from some
//!   agents only (seen differently from different places);
//! - the DNS provider: a fenced double. Every write carries the writer's node
//!   and term; a write from a term lower than one already written is refused,
//!   as a provider that takes a fencing token would;
//! - faults from the seed: partitions (symmetric and one-way, single links
//!   and whole agents), link loss, agent crashes and restarts from their data
//!   directories, endpoint deaths and flaps, provider errors and lost answers.
//!
//! Link loss is modelled as TCP sees it: a lost segment is retransmitted, so
//! the link stalls for a retransmission timeout and then delivers in order.
//! (turmoil's own random partitions drop segments for good, which a TCP
//! connection never recovers from; the harness does not use them.)
//!
//! The safety rules are checked at every applied entry of every replica
//! (see [`Checker`]) and at every step (one leader per term); liveness once
//! the faults stop: a leader is elected and the provider holds the decided
//! set within [`Options::settle`].

mod checker;
mod dns;
mod faults;
mod net;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use vantage::agent::Agent;
use vantage::config::Config;
use vantage::grpc::Listener;
use vantage::network::Connector;
use vantage::store::ApplyWatch;
use vantage::types::Peer;

pub use checker::Checker;
pub use dns::DnsWorld;
pub use faults::{Action, Schedule};

/// The simulated wall clock starts here (2027-01-15), so log times look real.
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// The agents' gRPC port.
const PORT: u16 = 7000;
/// The endpoints' TCP port.
const EP_PORT: u16 = 80;

/// Latency between hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// 0-1 ms one way.
    Loopback,
    /// One region: 1-5 ms one way.
    Region,
    /// Between regions: each link's round trip drawn from 40-250 ms, with up
    /// to 20 % jitter on every segment.
    Wan,
    /// The WAN of the question: round trips of 150 ms +/- 50 ms.
    Wan150,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Loopback, Profile::Region, Profile::Wan, Profile::Wan150];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Loopback => "loopback",
            Profile::Region => "region",
            Profile::Wan => "wan",
            Profile::Wan150 => "wan150",
        }
    }

    pub fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name() == s)
    }

    /// One link's base one-way latency and jitter, drawn from `rng`.
    fn link(self, rng: &mut fastrand::Rng) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            Profile::Loopback => (ms(0), ms(1)),
            Profile::Region => (ms(1), ms(4)),
            Profile::Wan => {
                let one_way = rng.u64(20..=125);
                (ms(one_way), ms(one_way / 5))
            }
            Profile::Wan150 => {
                let one_way = rng.u64(50..=100);
                (ms(one_way), ms(one_way / 5))
            }
        }
    }

    /// The round trip the retransmission timeout is based on.
    fn rto(self) -> Duration {
        match self {
            Profile::Loopback | Profile::Region => Duration::from_millis(200),
            Profile::Wan | Profile::Wan150 => Duration::from_millis(600),
        }
    }
}

/// One simulation run's settings.
#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// 3 or 5.
    pub agents: usize,
    pub profile: Profile,
    /// How long faults are injected (after the cluster forms).
    pub faults_for: Duration,
    /// How long after the last fault the cluster must have converged.
    pub settle: Duration,
    /// Only link loss and endpoint deaths: no partitions, crashes or provider
    /// faults (for counting spurious leader changes and timing failovers).
    pub calm: bool,
    /// Share of segments lost (0.0-0.3); None draws it from the seed.
    pub loss: Option<f64>,
    /// Extra `[raft]` lines for every agent.
    pub raft: String,
    /// Log the agents' own tracing at this level (for replaying a seed).
    pub log: Option<String>,
}

impl Options {
    /// The settings the seed draws when nothing else is asked for.
    pub fn for_seed(seed: u64) -> Options {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x005e_ed0f_0b75);
        Options {
            seed,
            agents: if rng.u8(..4) == 0 { 5 } else { 3 },
            profile: [Profile::Loopback, Profile::Region, Profile::Region, Profile::Wan][rng.usize(..4)],
            faults_for: Duration::from_secs(60),
            settle: Duration::from_secs(40),
            calm: false,
            loss: None,
            raft: String::new(),
            log: None,
        }
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut c = format!(
            "cargo run --release --bin vantage-sim -- --seed {} --agents {} --profile {} --faults-for {}s --settle {}s",
            self.seed,
            self.agents,
            self.profile.name(),
            self.faults_for.as_secs(),
            self.settle.as_secs()
        );
        if self.calm {
            c += " --calm";
        }
        if let Some(l) = self.loss {
            c += &format!(" --loss {l}");
        }
        if !self.raft.is_empty() {
            c += &format!(" --raft '{}'", self.raft);
        }
        c
    }
}

/// What one run found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<String>,
    pub simulated: Duration,
    pub wall: Duration,
    /// Leaders elected after the first.
    pub leader_changes: u64,
    pub writes: u64,
    /// Writes the provider refused for an old term.
    pub fenced: u64,
    /// Endpoint death → provider delete, ms, for deaths every agent could see.
    pub failovers: Vec<u64>,
    /// Down decisions whose quorum was checked.
    pub downs_checked: u64,
    /// Applied entries checked.
    pub entries_checked: u64,
    /// Of them, applied while the panic freeze held.
    pub panic_entries: u64,
    /// The last fault → the provider holding the decided set, ms.
    pub converged_after: Option<u64>,
    /// A hash of everything the run did (writes, elections, state digests):
    /// two runs of one seed must give the same.
    pub trace: u64,
    pub actions: usize,
}

impl Report {
    /// One line: the verdict, the run's shape and what it exercised.
    pub fn summary(&self, o: &Options) -> String {
        format!(
            "seed {}: {} | {} agents, {}, {} actions | simulated {:.0} s in {:.1} s | {} entries ({} under a panic freeze), {} downs checked, {} writes ({} fenced), {} leader changes, converged {} | trace {:016x}",
            self.seed,
            if self.violations.is_empty() { "ok" } else { "VIOLATION" },
            o.agents,
            o.profile.name(),
            self.actions,
            self.simulated.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.entries_checked,
            self.panic_entries,
            self.downs_checked,
            self.writes,
            self.fenced,
            self.leader_changes,
            self.converged_after.map_or("never".to_string(), |ms| format!("{ms} ms after the faults")),
            self.trace
        )
    }
}

/// Shared between the harness and the hosts (all on the one thread).
struct Hosts {
    agents: BTreeMap<u64, Weak<Agent>>,
}

/// Runs one simulation.
pub fn run(opts: &Options) -> Report {
    let started = Instant::now();
    // Election timeouts (openraft through vantage's runtime), notification
    // jitter: fastrand's generator of this thread.
    fastrand::seed(opts.seed);
    vantage::store::flush_in_place(true);
    let _log = opts.log.as_ref().map(|level| {
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_writer(std::io::stderr)
            .with_timer(SimTime)
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(sub)
    });
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let settle_end = Duration::from_secs(10) + opts.faults_for + opts.settle;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(settle_end + Duration::from_secs(5))
        .tick_duration(Duration::from_millis(1))
        .rng_seed(opts.seed)
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(1))
        .build();

    let n = opts.agents as u64;
    let agent_names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let ep_names: Vec<String> = (1..=3).map(|i| format!("e{i}")).collect();
    let ips: BTreeMap<String, IpAddr> = agent_names
        .iter()
        .chain(&ep_names)
        .map(|h| (h.clone(), sim.lookup(h.as_str())))
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let checker = Arc::new(Mutex::new(Checker::new(opts.agents)));
    if let Ok(path) = std::env::var("VANTAGE_SIM_TRACE") {
        checker.lock().unwrap_or_else(|p| p.into_inner()).log = Some(vec![format!("trace to {path}")]);
    }
    let dns = Arc::new(Mutex::new(DnsWorld::new(opts.seed)));
    let hosts = Rc::new(RefCell::new(Hosts {
        agents: BTreeMap::new(),
    }));

    for e in &ep_names {
        sim.host(e.as_str(), || async {
            let l = turmoil::net::TcpListener::bind(("0.0.0.0", EP_PORT)).await?;
            loop {
                // Accept and close: a TCP check only needs the handshake.
                let _ = l.accept().await?;
            }
        });
    }
    let members: Vec<(u64, String)> = (1..=n)
        .map(|i| (i, format!("{}:{PORT}", ips[&format!("n{i}")])))
        .collect();
    for id in 1..=n {
        std::fs::create_dir_all(dir.path().join(format!("n{id}"))).expect("data directory");
        let text = agent_config(
            id,
            &members,
            &ep_names.iter().map(|e| ips[e]).collect::<Vec<_>>(),
            dir.path().join(format!("n{id}")),
            &opts.raft,
        );
        let checker = checker.clone();
        let dns = dns.clone();
        let hosts = hosts.clone();
        let members = members.clone();
        sim.host(format!("n{id}").as_str(), move || {
            let text = text.clone();
            let checker = checker.clone();
            let dns = dns.clone();
            let hosts = hosts.clone();
            let members = members.clone();
            async move {
                let config = Config::parse(&text, &format!("n{id}.toml"))?;
                let listener = net::listen(PORT).await?;
                let connector = Connector::new(config.raft.connect_timeout.0, config.raft.max_message_bytes)
                    .with_dialer(Arc::new(net::SimDial));
                let clock = Arc::new(net::SimClock);
                let watch: ApplyWatch = Arc::new(move |index, voters: &BTreeSet<u64>, app| {
                    checker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .on_apply(id, index, voters, app)
                });
                let agent = Agent::start_watched(config, connector, clock.clone(), Some(watch)).await?;
                hosts.borrow_mut().agents.insert(id, Arc::downgrade(&agent));
                if id == 1 && !agent.is_initialized().await? {
                    let peers = members.iter().map(|(m, a)| (*m, Peer { addr: a.clone() })).collect();
                    agent.initialize(peers).await?;
                }
                let provider = Arc::new(dns::SimProvider::new(id, dns.clone()));
                let wiring = vantage::Wiring {
                    listener: Listener::Accepted(listener),
                    clock,
                    provider: Some(provider),
                    sighup: false,
                };
                vantage::serve_agent(agent, wiring, std::future::pending()).await?;
                Ok(())
            }
        });
    }

    // Link latencies from the profile.
    let all: Vec<String> = agent_names.iter().chain(&ep_names).cloned().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            let (base, jitter) = opts.profile.link(&mut rng);
            sim.set_link_latency(a.as_str(), b.as_str(), base);
            sim.set_link_max_message_latency(a.as_str(), b.as_str(), base + jitter);
        }
    }

    let faults_from = Duration::from_secs(10);
    let schedule = Schedule::draw(&mut rng, opts, &agent_names, &ep_names, faults_from);
    let loss = schedule.loss;
    let mut net = faults::Links::new(&all, loss, opts.profile.rto());
    let mut report = Report {
        seed: opts.seed,
        actions: schedule.actions.len(),
        ..Report::default()
    };
    let mut trace = Fnv::default();
    let mut pending = schedule.actions.into_iter().peekable();
    let mut leaders: BTreeSet<(u64, u64)> = BTreeSet::new();
    let mut crashed: BTreeSet<String> = BTreeSet::new();
    let mut dead: BTreeSet<String> = BTreeSet::new();
    let mut isolated_leaders: Vec<String> = Vec::new();
    let faults_end = faults_from + opts.faults_for;
    let mut converged: Option<Duration> = None;
    let mut step = 0u64;
    loop {
        let now = sim.elapsed();
        if now >= settle_end {
            break;
        }
        while pending.peek().is_some_and(|(at, _)| *at <= now) {
            let (_, action) = pending.next().expect("peeked");
            trace.add(format!("{:?}@{}", action, now.as_millis()).as_bytes());
            if opts.log.is_some() {
                eprintln!("{:>9.3}s SIM {action:?}", now.as_secs_f64());
            }
            match &action {
                Action::Crash(a) => {
                    sim.crash(a.as_str());
                    crashed.insert(a.clone());
                }
                Action::Restart(a) => {
                    if crashed.remove(a) {
                        sim.bounce(a.as_str());
                    }
                }
                Action::EndpointDies(e) => {
                    if dead.insert(e.clone()) {
                        sim.crash(e.as_str());
                        dns.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .endpoint_died(ips[e].to_string(), now);
                    }
                }
                Action::EndpointLives(e) => {
                    if dead.remove(e) {
                        sim.bounce(e.as_str());
                        dns.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .endpoint_lives(&ips[e].to_string());
                    }
                }
                Action::IsolateLeader => {
                    let leader = hosts
                        .borrow()
                        .agents
                        .values()
                        .filter_map(Weak::upgrade)
                        .find(|a| a.is_leader())
                        .map(|a| format!("n{}", a.id()));
                    if let Some(l) = leader {
                        net.apply(&sim, &Action::Isolate(l.clone()));
                        isolated_leaders.push(l);
                    }
                }
                Action::HealLeader => {
                    if let Some(l) = isolated_leaders.pop() {
                        net.apply(&sim, &Action::Heal(l));
                    }
                }
                Action::Provider { error, lost } => {
                    dns.lock().unwrap_or_else(|p| p.into_inner()).set_faults(*error, *lost);
                }
                other => net.apply(&sim, other),
            }
        }
        net.step(&sim, now, now < faults_end);
        if let Err(e) = sim.step() {
            report
                .violations
                .push(format!("at {} ms a host stopped with an error: {e}", now.as_millis()));
            break;
        }
        step += 1;
        // Leaders, by openraft's leader id (term, node): openraft lets two
        // candidates of one term each win in turn (a voter moves to the
        // greater id), so a term alone does not name a leader, and a leader
        // id cannot have two nodes by construction. What two leaders at once
        // must not do (both write DNS) is checked at the provider.
        if step.is_multiple_of(10) {
            for (id, w) in &hosts.borrow().agents {
                let Some(agent) = w.upgrade() else { continue };
                if agent.is_leader() && leaders.insert((agent.term(), *id)) {
                    trace.add(format!("leader {id} term {} @{}", agent.term(), now.as_millis()).as_bytes());
                }
            }
        }
        // Convergence once the faults are over.
        if now >= faults_end && converged.is_none() && step.is_multiple_of(100) {
            if let Some(done) = converged_now(&hosts.borrow(), &dns) {
                if done {
                    converged = Some(now - faults_end);
                }
            }
        }
    }
    report.simulated = sim.elapsed();
    report.leader_changes = (leaders.len() as u64).saturating_sub(1);
    report.converged_after = converged.map(|d| d.as_millis() as u64);
    if converged.is_none() {
        let state = describe(&hosts.borrow(), &dns);
        report.violations.push(format!(
            "not converged {} s after the last fault: {state}",
            opts.settle.as_secs()
        ));
    }
    {
        let mut c = checker.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(log), Ok(path)) = (&c.log, std::env::var("VANTAGE_SIM_TRACE")) {
            let _ = std::fs::write(path, log.join("\n"));
        }
        report.violations.append(&mut c.violations);
        report.downs_checked = c.downs_checked;
        report.entries_checked = c.entries_checked;
        report.panic_entries = c.panic_entries;
        for (index, (digest, _)) in &c.digests {
            trace.add(&index.to_le_bytes());
            trace.add(&digest.to_le_bytes());
        }
    }
    {
        let mut d = dns.lock().unwrap_or_else(|p| p.into_inner());
        report.violations.append(&mut d.violations);
        report.writes = d.writes.len() as u64;
        report.fenced = d.fenced;
        report.failovers = d.failovers.clone();
        for w in &d.writes {
            trace.add(w.as_bytes());
        }
    }
    drop(sim);
    report.trace = trace.0;
    report.wall = started.elapsed();
    report
}

/// Whether a leader is known to every running agent and the provider holds
/// what the leader's state says DNS should hold (None while no leader).
fn converged_now(hosts: &Hosts, dns: &Arc<Mutex<DnsWorld>>) -> Option<bool> {
    let live: Vec<Arc<Agent>> = hosts.agents.values().filter_map(Weak::upgrade).collect();
    let leader = live.iter().find(|a| a.is_leader())?;
    let id = leader.id();
    if live.iter().any(|a| a.leader().map(|(l, _)| l) != Some(id)) {
        return Some(false);
    }
    let desired = leader.read_now(|sm| sm.app.desired_records())?;
    let held = dns.lock().unwrap_or_else(|p| p.into_inner()).records();
    Some(!desired.is_empty() && desired == held)
}

fn describe(hosts: &Hosts, dns: &Arc<Mutex<DnsWorld>>) -> String {
    let mut out = Vec::new();
    for (id, w) in &hosts.agents {
        match w.upgrade() {
            Some(a) => out.push(format!(
                "node {id}: term {} leader {:?} applied {:?}",
                a.term(),
                a.leader().map(|l| l.0),
                a.metrics().last_applied.map(|l| l.index)
            )),
            None => out.push(format!("node {id}: down")),
        }
    }
    let held = dns.lock().unwrap_or_else(|p| p.into_inner()).records();
    out.push(format!(
        "provider holds {}",
        held.iter().map(|r| r.content.as_str()).collect::<Vec<_>>().join(",")
    ));
    if let Some(a) = hosts.agents.values().filter_map(Weak::upgrade).find(|a| a.is_leader()) {
        if let Some(d) = a.read_now(|sm| sm.app.desired_records()) {
            out.push(format!(
                "leader wants {}",
                d.iter().map(|r| r.content.as_str()).collect::<Vec<_>>().join(",")
            ));
        }
    }
    out.join("; ")
}

/// One agent's configuration file.
fn agent_config(id: u64, members: &[(u64, String)], endpoints: &[IpAddr], data_dir: PathBuf, raft: &str) -> String {
    let listen = &members[(id - 1) as usize].1;
    let mut t = format!(
        "node_id = {id}\nlisten = \"{listen}\"\ndata_dir = \"{}\"\n\
         # The simulated network carries plaintext only.\ninsecure_plaintext = true\n\n",
        data_dir.display()
    );
    for (m, a) in members {
        t += &format!("[[members]]\nid = {m}\naddr = \"{a}\"\n\n");
    }
    t += &format!("[raft]\n{}\n\n", raft.replace(';', "\n"));
    t += "[probe]\ninterval = \"1s\"\ntimeout = \"700ms\"\nfall = 3\nrise = 2\nheartbeat = \"5s\"\n\n\
          [decision]\nobservation_ttl = \"15s\"\nhold_down = \"5s\"\n\n\
          [dns]\nprovider = \"memory\"\n\n\
          [[pools]]\nname = \"web\"\nhostnames = [\"www.sim.test\"]\nmin_healthy = 1\n\
          check = { kind = \"tcp\", port = 80 }\n";
    for e in endpoints {
        t += &format!("[[pools.endpoints]]\naddress = \"{e}\"\n");
    }
    t
}

/// Log lines stamped with simulated time.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:>9.3}s", turmoil::sim_elapsed().unwrap_or_default().as_secs_f64())
    }
}

/// FNV-1a, for the run's trace.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn add(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
