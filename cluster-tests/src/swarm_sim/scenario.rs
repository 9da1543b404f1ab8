//! One simulated run's inputs: the model, the links, the store, the agent's
//! knobs and timeouts, and the policies under test; plus the named setups
//! of the measured points and the predictions.
//!
//! Design decisions:
//! - **Every constant of the code is a field**, with the code's value as the
//!   default (`peer/src/swarm/*`, `core/src/fetch.rs`, the agent's prefetch
//!   window), so a what-if is a flag, not an edit.
//! - **Link caps are payload rates**: a `tc tbf` cap of B bit/s carries
//!   about 0.94·B/8 bytes/s of TCP/TLS payload ([`PAYLOAD_EFFICIENCY`], the
//!   fluid model's figure), applied to node links and the store uplink.
//! - **Control message sizes** (Hello, Have, gossip) are estimates of what
//!   one authenticated gRPC exchange costs on the wire (HTTP/2 frames with
//!   the HMAC headers, TLS records, TCP/IP headers), not measurements.

use super::layout::Layout;

pub const MIB: u64 = 1 << 20;
/// Payload share of a shaped link's bit rate.
pub const PAYLOAD_EFFICIENCY: f64 = 0.94;

/// Bytes/s of payload through a link capped at `mbit` Mbit/s.
pub fn payload(mbit: f64) -> f64 {
    mbit * 1e6 / 8.0 * PAYLOAD_EFFICIENCY
}

/// How a node picks where each chunk comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Today: the owner streams while its chunk arrives; other holders
    /// serve only chunks complete in their last have-map, picked by idle
    /// upload; stalls and long waits go to the store.
    OwnerOnly,
    /// Every node serves what it holds or is receiving; each chunk flows
    /// down a pipelined tree rooted at its owner (see `sources.rs`).
    Relay,
}

/// How nodes learn who is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Every node sends a Hello to every other each heartbeat: O(N²).
    AllToAll,
    /// SWIM-style: each node gossips recent joins to a few random nodes per
    /// round and probes one per heartbeat: O(N) messages per round.
    Gossip,
}

/// How nodes learn which chunks others hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaveMode {
    /// A Have RPC to every peer before each object (awaited) and every
    /// refresh period while it is fetched.
    Rounds,
    /// Have-maps ride on membership messages: no round to wait for.
    Piggyback,
}

/// When a node's agent serves and when its share starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Agents start with the job and prefetch at once (a model prefix in
    /// OSS_PATH).
    Eager,
    /// Agents run before the job (daemons) but a node fetches only once its
    /// job opens the directory (bucket-root OSS_PATH).
    Lazy,
}

/// Timeouts and periods of the peer layer (seconds).
#[derive(Debug, Clone)]
pub struct Timers {
    pub peer_wait: f64,
    pub response_margin: f64,
    pub frame_stall: f64,
    pub frame_bytes: u64,
    /// How much slower than its fair share the slowest stream on a shared
    /// link runs (TCP flows through one shaped link are not equal): a
    /// stream counts as stalled when its fair share moves less than this
    /// many frames in `frame_stall`. 1: perfectly fair links.
    pub unfairness: f64,
    /// How long a broken stream waits for membership to declare its peer
    /// dead before the store (dead-after + one check).
    pub dies_soon: f64,
    pub book_wait: f64,
    pub max_attempts: usize,
    pub startup_wait: f64,
    pub have_timeout: f64,
    pub have_refresh: f64,
    pub heartbeat: f64,
    pub gossip_period: f64,
    pub gossip_fanout: usize,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            peer_wait: 60.0,
            response_margin: 2.0,
            frame_stall: 5.0,
            frame_bytes: MIB,
            unfairness: 1.0,
            dies_soon: 3.25,
            book_wait: 3.0,
            max_attempts: 3,
            startup_wait: 5.0,
            have_timeout: 1.0,
            have_refresh: 0.5,
            heartbeat: 1.0,
            gossip_period: 0.2,
            gossip_fanout: 3,
        }
    }
}

/// Wire bytes of control messages (estimates, see the module docs).
#[derive(Debug, Clone)]
pub struct Messages {
    /// One Hello request or answer.
    pub hello: f64,
    /// One Have request, and an answer before its bitmap and CRCs.
    pub have: f64,
    /// One gossip message before its rumors, and per rumor.
    pub gossip: f64,
    pub rumor: f64,
}

impl Default for Messages {
    fn default() -> Messages {
        Messages {
            hello: 400.0,
            have: 400.0,
            gossip: 150.0,
            rumor: 24.0,
        }
    }
}

/// CPU work that can set the pace (SHA-256 passes), in bytes/s per core.
#[derive(Debug, Clone)]
pub struct Cpu {
    /// The agent's end-to-end digest pass over an object that peers
    /// supplied (0: none).
    pub verify: f64,
    /// The consumer's reading after each file is ready (0: not simulated;
    /// times end when every byte is in memory).
    pub consume: f64,
    /// All nodes share this many cores (a one-machine lab); 0: each node
    /// has its own.
    pub shared_cores: f64,
}

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub nodes: usize,
    /// Large files in prefetch order.
    pub files: Vec<u64>,
    /// Small files every node downloads while mirroring (store egress only;
    /// their time is part of `t0`).
    pub small_bytes: u64,
    pub chunk: u64,
    pub part: u64,
    pub piece: u64,
    pub node_up: f64,
    pub node_down: f64,
    pub store_cap: f64,
    /// Per store connection (bytes/s; infinity: none).
    pub store_conn: f64,
    /// First-byte latency of a store GET.
    pub store_latency: f64,
    /// Store GETs in flight per node (prefetch.vcpus × workers).
    pub store_conc: usize,
    pub pull_conc: usize,
    /// Prefetch window: files in flight while their sizes fit ...
    pub window: u64,
    /// ... or while fewer than this many are (today 1: a file larger than
    /// the window is fetched alone).
    pub window_min_files: usize,
    pub rtt: f64,
    /// Agent start-up: spawn, listing, mirroring (calibrated).
    pub t0: f64,
    /// Nodes start uniformly within [0, skew] seconds.
    pub skew: f64,
    pub policy: Policy,
    pub membership: Membership,
    pub have: HaveMode,
    pub start: Start,
    /// A request for an object the source has not opened opens it at once;
    /// otherwise the source waits for its book (`book_wait`), then answers
    /// NOT_FOUND and the puller tries the next owner or the store (today).
    pub open_on_request: bool,
    /// Children per node in a relay tree.
    pub fanout: usize,
    pub timers: Timers,
    pub messages: Messages,
    pub cpu: Cpu,
    pub seed: u64,
}

impl Scenario {
    /// The benchmark of docs/benchmarks.md §3: `ossc gen-model --size-mb 256`
    /// (four shards; 266 MB with config and tokenizer), every link and the
    /// store uplink at `mbit`, the embedded store, `prefetch.vcpus=4,
    /// workers=8`, all on one 2-core VM, where the agents' SHA-256 pass over
    /// peer-supplied objects (0.64 GB/s per core, docs/benchmarks.md §4)
    /// shares the two cores. The consumer's own reading is left out: its
    /// cost at one node is inside the calibrated `t0` (modelled at the
    /// same rate it would make `t0` negative).
    pub fn bench266(nodes: usize, mbit: f64) -> Scenario {
        Scenario {
            name: "bench266".into(),
            nodes,
            files: vec![67_633_400, 67_127_264, 65_034_184, 65_536_128],
            small_bytes: 201_813,
            chunk: 16 * MIB,
            part: 8 * MIB,
            piece: MIB,
            node_up: payload(mbit),
            node_down: payload(mbit),
            store_cap: payload(mbit),
            store_conn: f64::INFINITY,
            store_latency: 0.002,
            store_conc: 32,
            pull_conc: 16,
            window: 2 * 32 * 8 * MIB,
            window_min_files: 1,
            rtt: 0.0005,
            t0: 0.3,
            skew: 0.0,
            policy: Policy::OwnerOnly,
            membership: Membership::AllToAll,
            have: HaveMode::Rounds,
            start: Start::Eager,
            open_on_request: false,
            fanout: 2,
            timers: Timers::default(),
            messages: Messages::default(),
            cpu: Cpu {
                verify: 0.64e9,
                consume: 0.0,
                shared_cores: 2.0,
            },
            seed: 1,
        }
    }

    /// A lab model of `total` bytes in `shards` equal shards (the 16-node
    /// lab's models), on `mbit` links with a third-party S3 server.
    pub fn lab(nodes: usize, total: u64, shards: u64, mbit: f64) -> Scenario {
        Scenario {
            name: format!("lab{}MB", total / 1_000_000),
            files: vec![total / shards; shards as usize],
            small_bytes: 0,
            store_latency: 0.01,
            ..Scenario::bench266(nodes, mbit)
        }
    }

    /// Production-like: a 70B fp16 model (140 GB in 30 shards), 25 Gbit/s
    /// node links, a store account capped at 25 Gbit/s with 100 MB/s per
    /// connection and 20 ms to first byte, the agent's default prefetch
    /// (`vcpus = workers = 16`: 256 GETs in flight, a 4 GiB window); times
    /// end when every node holds every byte (no consumer), each node with
    /// its own CPUs.
    pub fn prod140(nodes: usize) -> Scenario {
        Scenario {
            name: "prod140".into(),
            nodes,
            files: vec![140_000_000_000 / 30; 30],
            small_bytes: 0,
            piece: 8 * MIB,
            node_up: 25e9 / 8.0 * PAYLOAD_EFFICIENCY,
            node_down: 25e9 / 8.0 * PAYLOAD_EFFICIENCY,
            store_cap: 25e9 / 8.0 * PAYLOAD_EFFICIENCY,
            store_conn: 100e6,
            store_latency: 0.02,
            store_conc: 256,
            window: 2 * 256 * 8 * MIB,
            rtt: 0.0002,
            cpu: Cpu {
                verify: 0.0,
                consume: 0.0,
                shared_cores: 0.0,
            },
            ..Scenario::bench266(nodes, 0.0)
        }
    }

    /// The relay design under test: relay trees, gossip membership,
    /// have-maps on membership messages, objects opened on request, and at
    /// least two objects in flight (so the next object's trees fill while
    /// the current one's drain).
    pub fn with_relay(mut self) -> Scenario {
        self.policy = Policy::Relay;
        self.membership = Membership::Gossip;
        self.have = HaveMode::Piggyback;
        self.open_on_request = true;
        self.window_min_files = self.window_min_files.max(2);
        self
    }

    pub fn layout(&self) -> Layout {
        Layout::new(&self.files, self.chunk, self.part, self.piece)
    }

    pub fn model_bytes(&self) -> u64 {
        self.files.iter().sum::<u64>() + self.small_bytes
    }
}
