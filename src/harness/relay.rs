//! A fault-injecting UDP relay for tests of QUIC links: it sits between any
//! number of clients and one target and forwards datagrams both ways,
//! dropping, delaying, jittering and reordering them, and it can cut the link
//! altogether (a partition).
//!
//! ```text
//! client A ──┐                 ┌── upstream socket for A ──┐
//!            ├─► front socket ─┤                           ├─► target
//! client B ──┘   (local_addr)  └── upstream socket for B ──┘
//! ```
//!
//! Each client address gets its own upstream socket, so the target sees one
//! peer per client and its replies route back to the right one.
//!
//! Threads: one receives on the front socket, one per client receives on
//! its upstream socket, and a scheduler sends every datagram when it is due.
//! They all stop (and are joined) when the relay is dropped.
//!
//! Reproducibility: every direction of every client (a *flow*) draws its
//! faults from its own generator, seeded from [`Faults::seed`] and the
//! flow's number (clients are numbered in order of their first datagram), so
//! the fate of the n-th datagram of a flow depends only on the seed. Timing,
//! and so how flows interleave, is up to the machine.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sync::lock;

/// Datagrams waiting for their delivery time, at most; more are dropped (and
/// counted as dropped), so a stalled or flooded relay stays bounded.
pub const MAX_QUEUED: usize = 10_000;

/// Client addresses served, at most; datagrams from further ones are dropped.
pub const MAX_CLIENTS: usize = 1024;

/// The longest a held-back datagram waits for a later one of its flow to
/// overtake it; then it goes out anyway (without counting as reordered).
pub const MAX_HOLD: Duration = Duration::from_millis(50);

/// How often a receive thread looks at the stop flag if the datagram that
/// wakes it at drop never arrives.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Largest UDP payload.
const MAX_DATAGRAM_BYTES: usize = 65_535;

/// Socket buffers asked for: QUIC bursts overflow the usual 208 KiB default,
/// and a kernel drop here would be a fault nobody asked for (or counted).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// What the relay does to each datagram, independently per direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Probability, 0 to 1, that a datagram is dropped.
    pub drop: f64,
    /// Delay added to every datagram that is not dropped.
    pub delay: Duration,
    /// Each datagram's delay is `delay` plus or minus a uniform amount up to
    /// `jitter` (never below zero), so jitter alone reorders datagrams too.
    pub jitter: Duration,
    /// Probability, 0 to 1, that a datagram is held back until the next
    /// datagram in the same direction overtakes it (or [`MAX_HOLD`] passes).
    pub reorder: f64,
    /// Seeds the generators the fault decisions are drawn from.
    pub seed: u64,
}

impl Faults {
    /// A clean link: everything forwarded at once, in order.
    pub fn none() -> Faults {
        Faults {
            drop: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: 0.0,
            seed: 0,
        }
    }

    /// A bad but usable link: 5% loss, 10 ms ± 10 ms delay, 5% reordering.
    pub fn lossy(seed: u64) -> Faults {
        Faults {
            drop: 0.05,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(10),
            reorder: 0.05,
            seed,
        }
    }

    /// An `InvalidInput` error if a probability is outside 0..=1.
    fn check(&self) -> io::Result<()> {
        for (name, p) in [("drop", self.drop), ("reorder", self.reorder)] {
            if !(0.0..=1.0).contains(&p) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("Faults::{name} is a probability (0 to 1), not {p}"),
                ));
            }
        }
        Ok(())
    }
}

/// What a relay has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams sent on, either way (counted just after the send, so the
    /// receiver may see a datagram before this count does).
    pub forwarded: u64,
    /// Datagrams lost on purpose: by `drop`, by a pause, by a full queue
    /// (and the rare send error).
    pub dropped: u64,
    /// Held-back datagrams that a later datagram of their flow overtook.
    pub reordered: u64,
}

/// A running relay; stops when dropped. See the module docs.
pub struct UdpRelay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    front: Option<JoinHandle<()>>,
    scheduler: Option<JoinHandle<()>>,
}

impl UdpRelay {
    /// Starts a relay on `127.0.0.1:0` that forwards to `target`.
    ///
    /// # Errors
    ///
    /// If a socket cannot be bound, a thread cannot be started, or a
    /// probability in `faults` is outside 0..=1.
    pub fn start(target: SocketAddr, faults: Faults) -> io::Result<UdpRelay> {
        faults.check()?;
        let front = bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let local_addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            front: Arc::new(front),
            state: Mutex::new(State {
                faults,
                rngs: HashMap::new(),
                queue: BinaryHeap::new(),
                held: HashMap::new(),
                next_seq: 0,
                stopping: false,
            }),
            due: Condvar::new(),
            paused: AtomicBool::new(false),
            cut: Mutex::new(HashSet::new()),
            gate: Mutex::new(()),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reordered: AtomicU64::new(0),
            upstreams: Mutex::new(Vec::new()),
        });
        let mut relay = UdpRelay {
            shared: shared.clone(),
            local_addr,
            front: None,
            scheduler: None,
        };
        // Assigned one by one, so that a failed spawn still stops (on drop)
        // the thread that did start.
        relay.scheduler = Some(spawn("relay-scheduler", {
            let shared = shared.clone();
            move || shared.run_scheduler()
        })?);
        relay.front = Some(spawn("relay-front", move || shared.run_front())?);
        Ok(relay)
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies `faults` to every datagram received from now on. Every flow
    /// starts drawing afresh from the new seed.
    ///
    /// # Errors
    ///
    /// If a probability is outside 0..=1 (the faults stay as they were).
    pub fn set_faults(&self, faults: Faults) -> io::Result<()> {
        faults.check()?;
        let mut state = lock(&self.shared.state);
        state.faults = faults;
        state.rngs.clear();
        Ok(())
    }

    /// Cuts the link both ways: from the moment this returns until
    /// [`resume`](Self::resume), nothing is forwarded; datagrams received
    /// meanwhile and those already queued are dropped.
    pub fn pause(&self) {
        // Taking the gate waits out a delivery in progress, which re-reads
        // the flag for each datagram.
        let _gate = lock(&self.shared.gate);
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Cuts the link of one client, both ways, from datagrams received
    /// from now on (until [`heal`](Self::heal)): a partition of that
    /// client from the target, the relay's other clients unaffected.
    pub fn cut(&self, client: SocketAddr) {
        lock(&self.shared.cut).insert(client);
    }

    /// Heals every [`cut`](Self::cut).
    pub fn heal(&self) {
        lock(&self.shared.cut).clear();
    }

    /// Heals a [`pause`](Self::pause).
    pub fn resume(&self) {
        let _gate = lock(&self.shared.gate);
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            forwarded: self.shared.forwarded.load(Ordering::SeqCst),
            dropped: self.shared.dropped.load(Ordering::SeqCst),
            reordered: self.shared.reordered.load(Ordering::SeqCst),
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.stop.store(true, Ordering::SeqCst);
        lock(&shared.state).stopping = true;
        shared.due.notify_all();
        // The receive threads block in recv: an empty datagram wakes each.
        wake(self.local_addr);
        join(self.front.take());
        // The front thread is gone, so no upstream thread starts any more.
        let upstreams = std::mem::take(&mut *lock(&shared.upstreams));
        for (addr, _) in &upstreams {
            wake(*addr);
        }
        for (_, thread) in upstreams {
            join(Some(thread));
        }
        join(self.scheduler.take());
    }
}

/// One direction of one client's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Flow {
    /// Clients are numbered in order of their first datagram.
    client: u32,
    to_target: bool,
}

/// Where a datagram goes: out of `socket` to `to`.
struct Out {
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

/// A datagram waiting to be sent at `at`; `seq` keeps datagrams due at the
/// same instant in the order they were queued.
struct Queued {
    at: Instant,
    seq: u64,
    out: Out,
    data: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Queued {}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct State {
    faults: Faults,
    /// One generator per flow, created on the flow's first datagram.
    rngs: HashMap<Flow, StdRng>,
    /// Earliest first.
    queue: BinaryHeap<Reverse<Queued>>,
    /// At most one held-back datagram per flow; its `at` is when it goes out
    /// if nothing overtakes it.
    held: HashMap<Flow, Queued>,
    next_seq: u64,
    stopping: bool,
}

struct Shared {
    target: SocketAddr,
    front: Arc<UdpSocket>,
    state: Mutex<State>,
    /// Signalled when a datagram is queued or the relay stops.
    due: Condvar,
    paused: AtomicBool,
    /// Clients whose datagrams, both ways, are dropped (see `cut`).
    cut: Mutex<HashSet<SocketAddr>>,
    /// Held by the scheduler while it sends a batch, and by pause/resume:
    /// once `pause` returns, no datagram is forwarded.
    gate: Mutex<()>,
    stop: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    reordered: AtomicU64,
    /// Each upstream socket's loopback address (to wake it) and its thread.
    upstreams: Mutex<Vec<(SocketAddr, JoinHandle<()>)>>,
}

impl Shared {
    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::SeqCst);
    }

    /// Receives from clients; opens an upstream socket per new client.
    fn run_front(self: Arc<Self>) {
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
        let mut clients: HashMap<SocketAddr, (u32, Arc<UdpSocket>)> = HashMap::new();
        loop {
            let received = self.front.recv_from(&mut buf);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            // A timeout (or a transient error): look at the stop flag again.
            let Ok((len, from)) = received else { continue };
            let (client, upstream) = match clients.get(&from) {
                Some((client, upstream)) => (*client, upstream.clone()),
                None if clients.len() >= MAX_CLIENTS => {
                    self.count_drop();
                    continue;
                }
                None => {
                    // Bounded by MAX_CLIENTS.
                    let client = clients.len() as u32;
                    let Ok(upstream) = self.open_upstream(from, client) else {
                        // No socket for it now: its next datagram tries again.
                        self.count_drop();
                        continue;
                    };
                    clients.insert(from, (client, upstream.clone()));
                    (client, upstream)
                }
            };
            let flow = Flow {
                client,
                to_target: true,
            };
            let out = Out {
                socket: upstream,
                to: self.target,
            };
            self.submit(flow, from, &buf[..len], out);
        }
    }

    /// Binds the socket that speaks to the target for `client_addr`, and
    /// starts the thread that relays the target's replies back.
    fn open_upstream(
        self: &Arc<Self>,
        client_addr: SocketAddr,
        client: u32,
    ) -> io::Result<Arc<UdpSocket>> {
        let loopback: IpAddr = match self.target {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        };
        let ip = if self.target.ip().is_loopback() {
            loopback
        } else if self.target.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = Arc::new(bind((ip, 0).into())?);
        let port = socket.local_addr()?.port();
        let thread = spawn("relay-upstream", {
            let shared = self.clone();
            let socket = socket.clone();
            move || shared.run_upstream(&socket, client_addr, client)
        })?;
        lock(&self.upstreams).push(((loopback, port).into(), thread));
        Ok(socket)
    }

    /// Receives the target's datagrams for one client.
    fn run_upstream(&self, socket: &UdpSocket, client_addr: SocketAddr, client: u32) {
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
        let flow = Flow {
            client,
            to_target: false,
        };
        loop {
            let received = socket.recv_from(&mut buf);
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            match received {
                // NOTE: the socket is not connected (so that drop can wake
                // it); anything but the target is ignored.
                Ok((len, from)) if from == self.target => {
                    let out = Out {
                        socket: self.front.clone(),
                        to: client_addr,
                    };
                    self.submit(flow, client_addr, &buf[..len], out);
                }
                _ => {}
            }
        }
    }

    /// Decides a received datagram's fate and queues it.
    fn submit(&self, flow: Flow, client_addr: SocketAddr, data: &[u8], out: Out) {
        if self.paused.load(Ordering::SeqCst) || lock(&self.cut).contains(&client_addr) {
            self.count_drop();
            return;
        }
        let now = Instant::now();
        let mut state = lock(&self.state);
        let faults = state.faults;
        let rng = state
            .rngs
            .entry(flow)
            .or_insert_with(|| flow_rng(faults.seed, flow));
        // Always the same three draws, so that a datagram's fate depends
        // only on the seed and its position in the flow.
        let dropped = rng.random_bool(faults.drop);
        let jitter_us = micros(faults.jitter);
        let spread_us = rng.random_range(0..=jitter_us.saturating_mul(2));
        let hold = rng.random_bool(faults.reorder);
        if dropped || state.queue.len() + state.held.len() >= MAX_QUEUED {
            drop(state);
            self.count_drop();
            return;
        }
        let delay_us = (micros(faults.delay) + spread_us).saturating_sub(jitter_us);
        let at = now + Duration::from_micros(delay_us);
        let seq = state.next_seq;
        state.next_seq += 1;
        let queued = Queued {
            at,
            seq,
            out,
            data: data.to_vec(),
        };
        if let Some(mut overtaken) = state.held.remove(&flow) {
            // This datagram overtakes the held one, which goes right after it.
            overtaken.at = at;
            overtaken.seq = state.next_seq;
            state.next_seq += 1;
            state.queue.push(Reverse(queued));
            state.queue.push(Reverse(overtaken));
            self.reordered.fetch_add(1, Ordering::SeqCst);
        } else if hold {
            let held = Queued {
                at: at + MAX_HOLD,
                ..queued
            };
            state.held.insert(flow, held);
        } else {
            state.queue.push(Reverse(queued));
        }
        drop(state);
        self.due.notify_one();
    }

    /// Sends each queued datagram when it is due.
    fn run_scheduler(&self) {
        let mut batch = Vec::new();
        let mut state = lock(&self.state);
        loop {
            if state.stopping {
                return;
            }
            let now = Instant::now();
            let expired: Vec<Flow> = (state.held.iter())
                .filter(|(_, q)| q.at <= now)
                .map(|(flow, _)| *flow)
                .collect();
            for flow in expired {
                if let Some(q) = state.held.remove(&flow) {
                    state.queue.push(Reverse(q));
                }
            }
            while state.queue.peek().is_some_and(|Reverse(q)| q.at <= now) {
                batch.extend(state.queue.pop().map(|Reverse(q)| q));
            }
            if !batch.is_empty() {
                drop(state);
                self.deliver(&mut batch);
                state = lock(&self.state);
                continue;
            }
            let next = (state.queue.peek().map(|Reverse(q)| q.at))
                .into_iter()
                .chain(state.held.values().map(|q| q.at))
                .min();
            state = match next {
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    let woken = self.due.wait_timeout(state, wait);
                    woken.unwrap_or_else(|p| p.into_inner()).0
                }
                None => self.due.wait(state).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }

    fn deliver(&self, batch: &mut Vec<Queued>) {
        let _gate = lock(&self.gate);
        for q in batch.drain(..) {
            let paused = self.paused.load(Ordering::SeqCst);
            if !paused && q.out.socket.send_to(&q.data, q.out.to).is_ok() {
                self.forwarded.fetch_add(1, Ordering::SeqCst);
            } else {
                self.count_drop();
            }
        }
    }
}

/// The generator of one flow: the seed and the flow's number, mixed
/// (SplitMix64's finaliser) so that neighbouring flows draw unrelated
/// sequences.
fn flow_rng(seed: u64, flow: Flow) -> StdRng {
    let n = (u64::from(flow.client) << 1) | u64::from(flow.to_target);
    let mut z = seed ^ n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A UDP socket on `addr` with large buffers and a read timeout.
fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel may cap them.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind a relay socket on {addr}: {e}")))?;
    let socket = UdpSocket::from(socket);
    socket.set_read_timeout(Some(STOP_POLL))?;
    Ok(socket)
}

/// Sends an empty datagram to `addr` (a receive thread's socket).
fn wake(addr: SocketAddr) {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    // Best effort: a receive thread also polls the stop flag.
    if let Ok(socket) = UdpSocket::bind(local) {
        let _ = socket.send_to(&[], addr);
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

fn join(thread: Option<JoinHandle<()>>) {
    // A thread that panicked has already printed why; dropping the relay
    // must not panic again.
    if let Some(thread) = thread {
        let _ = thread.join();
    }
}
